//! Configuration (SPEC §8): keys, defaults, the `key=value` file format and precedence.
