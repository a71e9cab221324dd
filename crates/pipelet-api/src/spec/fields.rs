//! Typed reads of single fields from a JSON object, each error naming the field, the
//! expected type and what was sent. A JSON `null` reads as "not given".

use serde_json::{Map, Value};

use super::InputError;
use crate::error_codes::ErrorCode;
use crate::plural;

/// A short description of a JSON value for error messages ("the string \"5\"").
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => {
            // Echo only a prefix: the value may be a whole base64 image.
            let mut short: String = s.chars().take(32).collect();
            if short.len() < s.len() {
                short.push('…');
            }
            format!("the string {short:?}")
        }
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

fn get<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

fn wrong_type(name: &str, expected: &str, got: &Value) -> InputError {
    InputError::field(
        name,
        format!("{name} must be {expected}; got {}", describe(got)),
    )
    .with_code(ErrorCode::WrongType)
}

/// An optional string field, borrowed.
pub(crate) fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, InputError> {
    match get(obj, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(wrong_type(name, "a string", v)),
    }
}

/// An optional string field of at most `max_chars` characters.
pub(crate) fn opt_string(
    obj: &Map<String, Value>,
    name: &str,
    max_chars: usize,
) -> Result<Option<String>, InputError> {
    let Some(s) = opt_str(obj, name)? else {
        return Ok(None);
    };
    // Count lazily: stop as soon as the bound is passed.
    if s.chars().nth(max_chars).is_some() {
        let got = plural(s.chars().count() as u64, "character", "characters");
        let max = plural(max_chars as u64, "character", "characters");
        return Err(InputError::field(
            name,
            format!("{name} is too long: {got}; the limit is {max}"),
        )
        .with_code(ErrorCode::PromptTooLong));
    }
    Ok(Some(s.to_owned()))
}

/// The integer a JSON number stands for: `5` and `5.0` alike; `5.5` is not one.
pub(crate) fn integral(v: &Value) -> Option<i128> {
    if let Some(i) = v.as_i64() {
        return Some(i128::from(i));
    }
    if let Some(u) = v.as_u64() {
        return Some(i128::from(u));
    }
    let f = v.as_f64()?;
    // 2^100 keeps the cast exact-enough and far from i128's edges; anything that large is
    // out of every range we check anyway.
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 2f64.powi(100)).then_some(f as i128)
}

/// An optional whole-number field; `expected` says what it should be ("an integer").
pub(crate) fn opt_integer(
    obj: &Map<String, Value>,
    name: &str,
    expected: &str,
) -> Result<Option<i128>, InputError> {
    match get(obj, name) {
        None => Ok(None),
        Some(v) => integral(v)
            .map(Some)
            .ok_or_else(|| wrong_type(name, expected, v)),
    }
}

/// An optional size in pixels (`width`, `height`, `min_height`).
pub(crate) fn opt_dimension(
    obj: &Map<String, Value>,
    name: &str,
) -> Result<Option<u32>, InputError> {
    let expected = "a whole number of pixels";
    match opt_integer(obj, name, expected)? {
        None => Ok(None),
        Some(n) => u32::try_from(n).map(Some).map_err(|_| {
            InputError::field(name, format!("{name} must be {expected}; got {n}"))
                .with_code(ErrorCode::InvalidResolution)
        }),
    }
}

/// An optional boolean field.
pub(crate) fn opt_bool(obj: &Map<String, Value>, name: &str) -> Result<Option<bool>, InputError> {
    match get(obj, name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(wrong_type(name, "true or false", v)),
    }
}
