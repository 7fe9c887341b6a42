//! The PEP 3333 environ, as the application sees it.

use crate::support::{Json, Spillway};

fn echo() -> crate::support::Server {
    Spillway::new("apps/echo.py:app")
        .arg("--threads")
        .arg("2")
        .start()
}

fn environ_of(res: &crate::support::Response) -> Json {
    assert_eq!(res.status, 200, "{res}");
    res.json().get("environ").clone()
}

#[test]
fn request_method_and_protocol() {
    let srv = echo();
    let env = environ_of(&srv.request("PATCH", "/m", &[], b""));
    assert_eq!(env.get("REQUEST_METHOD").s(), "PATCH");
    assert_eq!(env.get("SERVER_PROTOCOL").s(), "HTTP/1.1");

    let res = srv.raw(b"GET /old HTTP/1.0\r\n\r\n");
    let env = environ_of(&res);
    assert_eq!(env.get("SERVER_PROTOCOL").s(), "HTTP/1.0");
    assert_eq!(env.get("PATH_INFO").s(), "/old");
}

#[test]
fn path_info_is_percent_decoded_then_latin1() {
    let srv = echo();
    let env = environ_of(&srv.get("/caf%C3%A9"));
    // UTF-8 bytes C3 A9, each seen as one latin-1 character (PEP 3333 "bytes-as-str").
    assert_eq!(env.get("PATH_INFO").s(), "/caf\u{c3}\u{a9}");
    assert_eq!(env.get("SCRIPT_NAME").s(), "");

    let env = environ_of(&srv.get("/a%2Fb/c%20d"));
    assert_eq!(env.get("PATH_INFO").s(), "/a/b/c d");
}

#[test]
fn query_string_is_raw() {
    let srv = echo();
    let env = environ_of(&srv.get("/q?name=caf%C3%A9&x=1+2&empty=&flag"));
    assert_eq!(
        env.get("QUERY_STRING").s(),
        "name=caf%C3%A9&x=1+2&empty=&flag"
    );
    assert_eq!(env.get("PATH_INFO").s(), "/q");

    let env = environ_of(&srv.get("/noquery"));
    assert_eq!(
        env.get("QUERY_STRING").s(),
        "",
        "QUERY_STRING must be present and empty"
    );
}

#[test]
fn script_name_from_root_path() {
    let srv = Spillway::new("apps/echo.py:app")
        .arg("--root-path")
        .arg("/api")
        .start();
    let env = environ_of(&srv.get("/api/items/7?x=1"));
    assert_eq!(env.get("SCRIPT_NAME").s(), "/api");
    assert_eq!(env.get("PATH_INFO").s(), "/items/7");
    assert_eq!(env.get("QUERY_STRING").s(), "x=1");

    let env = environ_of(&srv.get("/api"));
    assert_eq!(env.get("SCRIPT_NAME").s(), "/api");
    assert_eq!(env.get("PATH_INFO").s(), "");

    // "/apiary" does not start with the path segment "/api".
    let env = environ_of(&srv.get("/apiary"));
    let script = env.get("SCRIPT_NAME").s();
    let path = env.get("PATH_INFO").s();
    assert!(
        path.is_empty() || path.starts_with('/'),
        "PATH_INFO {path:?} must be empty or start with '/' (SCRIPT_NAME {script:?})"
    );
    assert_ne!(path, "ary", "root path split in the middle of a segment");
}

#[test]
fn http_headers_become_http_keys_and_repeats_are_joined() {
    let srv = echo();
    let res = srv.raw(
        b"GET /h HTTP/1.1\r\nHost: example.test:1234\r\nX-Custom-Thing: one\r\n\
          X-Multi: a\r\nX-Multi: b\r\nUser-Agent: spillway-test\r\nConnection: close\r\n\r\n",
    );
    let env = environ_of(&res);
    assert_eq!(env.get("HTTP_HOST").s(), "example.test:1234");
    assert_eq!(env.get("HTTP_X_CUSTOM_THING").s(), "one");
    // RFC 9110 §5.3: joined with a comma, as gunicorn does.
    assert_eq!(env.get("HTTP_X_MULTI").s(), "a,b");
    assert_eq!(env.get("HTTP_USER_AGENT").s(), "spillway-test");
}

#[test]
fn header_names_with_underscores_are_dropped() {
    let srv = echo();
    let res = srv.raw(
        b"GET /u HTTP/1.1\r\nHost: x\r\nX-Real-Ip: 10.0.0.1\r\nX_Real_Ip: 6.6.6.6\r\n\
          X_Only_Underscore: evil\r\nConnection: close\r\n\r\n",
    );
    let env = environ_of(&res);
    assert_eq!(env.get("HTTP_X_REAL_IP").s(), "10.0.0.1", "{env}");
    assert!(
        !env.has("HTTP_X_ONLY_UNDERSCORE"),
        "underscore header reached the app: {env}"
    );
}

#[test]
fn content_type_and_length_have_no_http_prefix() {
    let srv = echo();
    let res = srv.post("/p", "application/json", b"{}");
    let env = environ_of(&res);
    assert_eq!(env.get("CONTENT_TYPE").s(), "application/json");
    assert_eq!(env.get("CONTENT_LENGTH").s(), "2");
    assert!(!env.has("HTTP_CONTENT_TYPE"), "{env}");
    assert!(!env.has("HTTP_CONTENT_LENGTH"), "{env}");
    assert_eq!(res.json().get("body").s(), "{}");
}

#[test]
fn server_name_port_and_remote_address() {
    let srv = echo();
    let mut conn = srv.connect();
    let local_port = conn.local_port();
    let res = conn.get("/addr");
    let env = environ_of(&res);
    assert_eq!(env.get("SERVER_NAME").s(), "127.0.0.1");
    assert_eq!(env.get("SERVER_PORT").s(), srv.port().to_string());
    assert_eq!(env.get("REMOTE_ADDR").s(), "127.0.0.1");
    assert_eq!(env.get("REMOTE_PORT").s(), local_port.to_string());
}

#[test]
fn wsgi_keys_have_the_right_values() {
    let srv = echo();
    let res = srv.get("/wsgi");
    let json = res.json();
    let env = environ_of(&res);
    assert_eq!(
        env.get("wsgi.version"),
        &Json::Arr(vec![Json::Num(1.0), Json::Num(0.0)])
    );
    assert_eq!(json.get("types").get("wsgi.version").s(), "tuple");
    assert_eq!(env.get("wsgi.url_scheme").s(), "http");
    assert_eq!(
        env.get("wsgi.multithread").bool(),
        Some(true),
        "--threads 2"
    );
    assert_eq!(env.get("wsgi.multiprocess").bool(), Some(false), "-w 1");
    assert_eq!(env.get("wsgi.run_once").bool(), Some(false));
    assert_eq!(env.get("wsgi.input_terminated").bool(), Some(true));
    for (what, methods) in [("input", json.get("input")), ("errors", json.get("errors"))] {
        for m in methods.keys() {
            assert_eq!(methods.get(m).bool(), Some(true), "wsgi.{what} lacks {m}()");
        }
    }
    assert!(env.has("wsgi.file_wrapper"), "{env}");
}

#[test]
fn multiprocess_is_true_with_several_workers_and_multithread_false_with_one_thread() {
    let srv = Spillway::new("apps/echo.py:app")
        .workers(2)
        .arg("--threads")
        .arg("1")
        .start();
    let env = environ_of(&srv.get("/"));
    assert_eq!(env.get("wsgi.multiprocess").bool(), Some(true));
    assert_eq!(env.get("wsgi.multithread").bool(), Some(false));
}

#[test]
fn cgi_keys_are_native_strings() {
    let srv = echo();
    let res = srv.request(
        "POST",
        "/t?a=1",
        &[("Content-Type", "text/plain"), ("X-A", "b")],
        b"body",
    );
    let types = res.json().get("types").clone();
    for k in types.keys() {
        if !k.contains('.') {
            assert_eq!(types.get(k).s(), "str", "environ[{k:?}] must be a str");
        }
    }
    for k in [
        "REQUEST_METHOD",
        "SCRIPT_NAME",
        "PATH_INFO",
        "QUERY_STRING",
        "CONTENT_TYPE",
        "CONTENT_LENGTH",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "REMOTE_ADDR",
        "REMOTE_PORT",
    ] {
        assert!(types.has(k), "environ lacks {k}: {types}");
    }
    assert_eq!(types.get("wsgi.multithread").s(), "bool");
    assert_eq!(types.get("wsgi.run_once").s(), "bool");
}

#[test]
fn latin1_header_values_reach_the_app_as_latin1() {
    let srv = echo();
    let res =
        srv.raw(b"GET /l HTTP/1.1\r\nHost: x\r\nX-Name: caf\xc3\xa9\r\nConnection: close\r\n\r\n");
    let env = environ_of(&res);
    assert_eq!(env.get("HTTP_X_NAME").s(), "caf\u{c3}\u{a9}");
}
