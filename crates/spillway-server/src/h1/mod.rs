//! HTTP/1.1 on the wire, as pure functions over buffers: request heads in (`head`),
//! request bodies in (`body`), responses out (`response`). The connection (`conn`) does
//! the I/O; nothing here touches a socket, so every rule is unit-tested byte by byte.

pub(crate) mod body;
pub(crate) mod head;
pub(crate) mod response;
