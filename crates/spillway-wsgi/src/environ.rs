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
        let key = match well_known(py, k) {
            Some(key) => key,
            None => latin1(py, k),
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

/// Defines [`well_known`] over a fixed list of environ keys.
macro_rules! well_known_keys {
    ($($key:literal)*) => {
        /// The shared key for a header most requests carry, or `None`. Only these are
        /// interned: a key made from any header name a client sends would live as long
        /// as the worker (CPython 3.12+ never frees interned strings), so a client could
        /// grow it without end with names of its own.
        fn well_known<'py>(py: Python<'py>, key: &[u8]) -> Option<Bound<'py, PyString>> {
            match std::str::from_utf8(key).ok()? {
                $($key => Some(intern!(py, $key).clone()),)*
                _ => None,
            }
        }
    };
}

well_known_keys! {
    "HTTP_HOST" "CONTENT_TYPE" "CONTENT_LENGTH" "HTTP_USER_AGENT" "HTTP_ACCEPT"
    "HTTP_ACCEPT_ENCODING" "HTTP_ACCEPT_LANGUAGE" "HTTP_CONNECTION" "HTTP_COOKIE"
    "HTTP_AUTHORIZATION" "HTTP_CACHE_CONTROL" "HTTP_PRAGMA" "HTTP_REFERER" "HTTP_ORIGIN"
    "HTTP_IF_NONE_MATCH" "HTTP_IF_MODIFIED_SINCE" "HTTP_IF_MATCH" "HTTP_RANGE"
    "HTTP_X_REQUEST_ID" "HTTP_X_FORWARDED_FOR" "HTTP_X_FORWARDED_PROTO"
    "HTTP_X_FORWARDED_HOST" "HTTP_X_REAL_IP" "HTTP_X_AUTH_TOKEN" "HTTP_X_OPENSTACK_REQUEST_ID"
    "HTTP_OPENSTACK_API_VERSION" "HTTP_X_OPENSTACK_NOVA_API_VERSION" "HTTP_TRACEPARENT"
    "HTTP_TRACESTATE" "HTTP_X_CSRFTOKEN" "HTTP_X_REQUESTED_WITH" "HTTP_DNT"
    "HTTP_SEC_FETCH_SITE" "HTTP_SEC_FETCH_MODE" "HTTP_SEC_FETCH_DEST" "HTTP_SEC_CH_UA"
    "HTTP_SEC_CH_UA_MOBILE" "HTTP_SEC_CH_UA_PLATFORM" "HTTP_UPGRADE_INSECURE_REQUESTS"
    "HTTP_TE" "HTTP_EXPECT" "HTTP_TRANSFER_ENCODING" "HTTP_VIA" "HTTP_FORWARDED"
}
