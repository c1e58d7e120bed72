//! The standard command line of a service binary (feature `cli`).
