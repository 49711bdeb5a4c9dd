"""Pipeline definitions (training), the compiler entry and the `ctloop` command line."""
