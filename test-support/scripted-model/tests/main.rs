//! Tests of the scripted model server through its HTTP interface: a raw HTTP/1.1 client over
//! TCP, and the plan agent's commands run by bash in real git repositories.

mod client;
mod http;
mod plan_agent;
