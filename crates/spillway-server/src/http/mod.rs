//! Client connections on the wire: TLS termination, the PROXY protocol, HTTP/1.1 and
//! HTTP/2 connections (`conn`), and the request head a worker gets (`request`).

pub mod conn;
pub mod proxy_protocol;
pub mod request;
pub mod tls;
