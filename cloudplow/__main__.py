from cloudplow.cli import main

raise SystemExit(main())
