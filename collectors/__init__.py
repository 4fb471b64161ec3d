"""Everything that reads the host: cgroups, container discovery, runtime metadata and (later) log files."""
