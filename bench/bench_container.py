"""The container image: its size, and how long it takes to build and start.

Runs tests/test_compose_stack.py (Debian's podman and podman-compose, base
images from mmdebstrap kept in CLOUDPLOW_PODMAN_HOME) and prints, as a
markdown section, the timings it reports: the base images (0 s when cached),
the image build, `podman-compose up` until the health check passes, and
`podman stop` of cloudplow mid-session.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
MARKER = "compose stack timings: "


def main() -> int:
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "tests/test_compose_stack.py"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    lines = [line for line in completed.stdout.splitlines() if MARKER in line]
    if completed.returncode != 0 or not lines:
        print(completed.stdout[-3000:] + completed.stderr[-2000:], file=sys.stderr)
        return 1
    timings = json.loads(lines[-1].split(MARKER, 1)[1])
    print("| measure | value |\n|---|---|")
    print(f"| image size (podman image inspect) | {timings['image_megabytes']:.0f} MB (limit 250 MB) |")
    print(f"| base images from mmdebstrap (0 when cached) | {timings['base_images_seconds']:.0f} s |")
    print(f"| image build (podman build, layer cache as left) | {timings['build_seconds']:.0f} s |")
    print(f"| podman-compose up until healthy | {timings['start_to_healthy_seconds']:.0f} s |")
    print(f"| podman stop of cloudplow mid-session | {timings['stop_seconds']:.1f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
