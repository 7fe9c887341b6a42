//! The PEP 3333 environ, built from a decoded request head. The front has already mapped
//! header names to environ keys and joined repeated headers, so this is one dict insert
//! per entry.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use spillway_proto::RequestHead;

use crate::input::Input;
use crate::Ctx;

/// A WSGI "native string": bytes mapped one-to-one to code points (latin-1).
pub(crate) fn latin1<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyString> {
    if b.is_ascii() {
        if let Ok(s) = std::str::from_utf8(b) {
            return PyString::new(py, s);
        }
    }
    let s: String = b.iter().map(|&c| c as char).collect();
    PyString::new(py, &s)
}

/// The entries every request's environ shares, built once per worker: a request's environ
/// starts as a copy of it (one table copy instead of seven inserts).
pub(crate) fn base<'py>(
    py: Python<'py>,
    errors: &Bound<'py, PyAny>,
    file_wrapper: &Bound<'py, PyAny>,
    multithread: bool,
    multiprocess: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "wsgi.version"), (1, 0))?;
    d.set_item(intern!(py, "wsgi.errors"), errors)?;
    d.set_item(intern!(py, "wsgi.multithread"), multithread)?;
    d.set_item(intern!(py, "wsgi.multiprocess"), multiprocess)?;
    d.set_item(intern!(py, "wsgi.run_once"), false)?;
    // The front delivers EOF at the end of every body, chunked or not.
    d.set_item(intern!(py, "wsgi.input_terminated"), true)?;
    d.set_item(intern!(py, "wsgi.file_wrapper"), file_wrapper)?;
    Ok(d)
}

/// Builds the environ dict for one request.
pub(crate) fn build<'py>(
    py: Python<'py>,
    ctx: &Ctx,
    head: &RequestHead,
    input: Bound<'py, Input>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = ctx.environ_base.bind(py).copy()?;
    d.set_item(intern!(py, "REQUEST_METHOD"), latin1(py, &head.method))?;
    d.set_item(intern!(py, "SCRIPT_NAME"), latin1(py, &head.script_name))?;
    d.set_item(intern!(py, "PATH_INFO"), latin1(py, &head.path_info))?;
    d.set_item(intern!(py, "QUERY_STRING"), latin1(py, &head.query_string))?;
    d.set_item(intern!(py, "SERVER_NAME"), latin1(py, &head.server_name))?;
    d.set_item(intern!(py, "SERVER_PORT"), latin1(py, &head.server_port))?;
    d.set_item(
        intern!(py, "SERVER_PROTOCOL"),
        PyString::intern(py, head.protocol.as_str()),
    )?;
    d.set_item(intern!(py, "REMOTE_ADDR"), latin1(py, &head.remote_addr))?;
    if !head.remote_port.is_empty() {
        d.set_item(intern!(py, "REMOTE_PORT"), latin1(py, &head.remote_port))?;
    }
    for (k, v) in &head.headers {
        // Keys repeat across requests (HTTP_HOST, HTTP_ACCEPT…): interning shares them.
        let key = match std::str::from_utf8(k) {
            Ok(s) => PyString::intern(py, s),
            Err(_) => latin1(py, k),
        };
        d.set_item(key, latin1(py, v))?;
    }
    d.set_item(
        intern!(py, "wsgi.url_scheme"),
        PyString::intern(py, head.scheme.as_str()),
    )?;
    d.set_item(intern!(py, "wsgi.input"), input)?;
    Ok(d)
}
