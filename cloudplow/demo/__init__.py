"""The local demo: a quota WebDAV server standing in for Google Drive, and `make run`."""
