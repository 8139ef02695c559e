//! Tests of loop-http through the network: a real server on `127.0.0.1:0` in front of a real
//! engine (in-memory store, simulated agent, temporary git repository), driven by the typed
//! client and by raw requests. One binary with modules.

mod browser;
mod client;
mod dash;
mod failures;
mod fuzz;
mod routes;
mod security;
mod streams;
mod support;
