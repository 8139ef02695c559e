//! # loop-http
//!
//! The wire: the HTTP control plane of SPEC §10 (hyper 1 server, SSE streams, token auth) and
//! the typed async client that `loopctl` and the tests use. Only this crate knows the wire
//! format.
