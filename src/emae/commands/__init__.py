"""Commands: files, configurations and run folders around the library's computations."""
