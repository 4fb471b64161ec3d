"""Log routes: pure encoders and transports (file, stdout; syslog and HTTP follow)."""
