//! JSON printed by test applications: parsed by serde_json, then held as a small tree with
//! the accessors the tests use. A missing member or a wrong type reads as null, so an
//! assertion fails with the document in its message rather than deep in a lookup.

use std::fmt;

use serde_json::Value;

/// A parsed JSON document (or a part of one).
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

static NULL: Json = Json::Null;

impl From<Value> for Json {
    fn from(v: Value) -> Json {
        match v {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(b),
            Value::Number(n) => Json::Num(n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) => Json::Str(s),
            Value::Array(a) => Json::Arr(a.into_iter().map(Json::from).collect()),
            Value::Object(m) => Json::Obj(m.into_iter().map(|(k, v)| (k, Json::from(v))).collect()),
        }
    }
}

impl Json {
    /// Parses a document.
    pub fn parse(s: &str) -> Result<Json, String> {
        serde_json::from_str::<Value>(s)
            .map(Json::from)
            .map_err(|e| e.to_string())
    }

    /// Member `key` of an object, null if absent.
    pub fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(m) => m.iter().find(|(k, _)| k == key).map_or(&NULL, |(_, v)| v),
            _ => &NULL,
        }
    }

    /// Whether the object has member `key`.
    pub fn has(&self, key: &str) -> bool {
        matches!(self, Json::Obj(m) if m.iter().any(|(k, _)| k == key))
    }

    /// The object's keys.
    pub fn keys(&self) -> Vec<&str> {
        match self {
            Json::Obj(m) => m.iter().map(|(k, _)| k.as_str()).collect(),
            _ => Vec::new(),
        }
    }

    /// The string, if it is one.
    pub fn str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The string; panics with the value if it is not one.
    pub fn s(&self) -> &str {
        self.str()
            .unwrap_or_else(|| panic!("expected a JSON string, got {self}"))
    }

    /// The number, if it is one.
    pub fn num(&self) -> Option<f64> {
        match self {
            Json::Num(n) => Some(*n),
            _ => None,
        }
    }

    /// The number as u64; panics with the value if it is not a whole number.
    pub fn u64(&self) -> u64 {
        match self.num() {
            Some(n) if n >= 0.0 && n.fract() == 0.0 => n as u64,
            _ => panic!("expected a JSON unsigned integer, got {self}"),
        }
    }

    /// The boolean, if it is one.
    pub fn bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The array's elements (empty if not an array).
    pub fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            _ => &[],
        }
    }

    /// The array's strings.
    pub fn strs(&self) -> Vec<&str> {
        self.arr().iter().filter_map(Json::str).collect()
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => write!(f, "null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Num(n) => write!(f, "{n}"),
            Json::Str(s) => write!(f, "{}", Value::String(s.clone())),
            Json::Arr(a) => {
                write!(f, "[")?;
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        write!(f, ",")?;
                    }
                    write!(f, "{v}")?;
                }
                write!(f, "]")
            }
            Json::Obj(m) => {
                write!(f, "{{")?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        write!(f, ",")?;
                    }
                    write!(f, "{}:{v}", Value::String(k.clone()))?;
                }
                write!(f, "}}")
            }
        }
    }
}
