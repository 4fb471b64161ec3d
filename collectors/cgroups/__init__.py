"""cgroup v1 and v2: mount discovery, pure file parsers, and one stats reader per version."""
