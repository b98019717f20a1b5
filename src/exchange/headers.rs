//! Headers-exchange matching (`x-match` = all / any / all-with-x / any-with-x), RabbitMQ rules:
//! binding arguments starting with `x-` are ignored unless the `-with-x` variant is used; `all`
//! with no other arguments matches every message, `any` with none matches nothing; a void
//! binding value only requires the header to be present; integers of any width compare equal by
//! value (and equal to a float of the same value), strings never equal numbers.

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::error::AmqpError;
use crate::protocol::methods::{type_name, value_int, value_str};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XMatch {
    All,
    Any,
    AllWithX,
    AnyWithX,
}

/// Read and validate the binding's `x-match` argument (406 on a bad value or type).
pub fn parse_x_match(args: &FieldTable) -> Result<XMatch, AmqpError> {
    let Some(v) = args.inner().get("x-match") else { return Ok(XMatch::All) };
    let Some(s) = (match v {
        AMQPValue::LongString(_) => value_str(v),
        _ => None,
    }) else {
        return Err(AmqpError::precondition(format_args!(
            "Invalid x-match field type {} (value {}); expected longstr",
            type_name(v),
            crate::protocol::methods::value_display(v)
        )));
    };
    match s.as_str() {
        "all" => Ok(XMatch::All),
        "any" => Ok(XMatch::Any),
        "all-with-x" => Ok(XMatch::AllWithX),
        "any-with-x" => Ok(XMatch::AnyWithX),
        other => Err(AmqpError::precondition(format_args!(
            "Invalid x-match field value <<\"{other}\">>; expected all, any, all-with-x, or any-with-x"
        ))),
    }
}

/// Whether a message with `headers` matches a binding with arguments `args`.
pub fn matches(mode: XMatch, args: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let with_x = matches!(mode, XMatch::AllWithX | XMatch::AnyWithX);
    let all = matches!(mode, XMatch::All | XMatch::AllWithX);
    let mut considered = args
        .inner()
        .iter()
        .filter(|(k, _)| k.as_str() != "x-match" && (with_x || !k.as_str().starts_with("x-")))
        .peekable();
    if considered.peek().is_none() {
        return all;
    }
    let lookup = |k: &str| headers.and_then(|h| h.inner().get(k));
    let mut any_hit = false;
    for (k, want) in considered {
        let hit = match (want, lookup(k.as_str())) {
            (_, None) => false,
            (AMQPValue::Void, Some(_)) => true,
            (want, Some(got)) => values_equal(want, got),
        };
        if all && !hit {
            return false;
        }
        any_hit |= hit;
    }
    all || any_hit
}

/// Erlang `==` on AMQP values: numeric types compare by value, everything else structurally.
fn values_equal(a: &AMQPValue, b: &AMQPValue) -> bool {
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (value_str(a), value_str(b)) {
        return x == y;
    }
    a == b
}

fn number(v: &AMQPValue) -> Option<f64> {
    match v {
        AMQPValue::Float(f) => Some(*f as f64),
        AMQPValue::Double(d) => Some(*d),
        AMQPValue::Boolean(_) => None,
        other => value_int(other).map(|i| i as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::methods::longstr;

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    #[test]
    fn x_match_table() {
        let msg = table(&[("a", longstr("1")), ("b", AMQPValue::LongInt(2)), ("x-k", longstr("v"))]);
        let cases: Vec<(Vec<(&str, AMQPValue)>, bool)> = vec![
            (vec![], true),
            (vec![("x-match", longstr("any"))], false),
            (vec![("a", longstr("1"))], true),
            (vec![("a", longstr("1")), ("b", AMQPValue::LongInt(3))], false),
            (vec![("x-match", longstr("any")), ("a", longstr("1")), ("b", AMQPValue::LongInt(3))], true),
            // Integer widths and floats compare by value; strings never equal numbers.
            (vec![("b", AMQPValue::LongLongInt(2))], true),
            (vec![("b", AMQPValue::Double(2.0))], true),
            (vec![("b", longstr("2"))], false),
            (vec![("a", AMQPValue::Boolean(true))], false),
            // Void: presence only.
            (vec![("b", AMQPValue::Void)], true),
            (vec![("c", AMQPValue::Void)], false),
            // x- arguments only count in the -with-x variants.
            (vec![("x-k", longstr("other"))], true),
            (vec![("x-match", longstr("all-with-x")), ("x-k", longstr("other"))], false),
            (vec![("x-match", longstr("all-with-x")), ("x-k", longstr("v"))], true),
            (vec![("x-match", longstr("any-with-x")), ("x-k", longstr("v")), ("z", longstr("no"))], true),
            (vec![("x-match", longstr("any")), ("x-k", longstr("v"))], false),
        ];
        for (args, expect) in cases {
            let args = table(&args);
            let mode = parse_x_match(&args).unwrap();
            assert_eq!(matches(mode, &args, Some(&msg)), expect, "{args:?}");
        }
        // A message without headers matches only an all-binding without plain arguments.
        assert!(matches(XMatch::All, &FieldTable::default(), None));
        assert!(!matches(XMatch::All, &table(&[("a", longstr("1"))]), None));
    }

    #[test]
    fn invalid_x_match_is_406_with_rabbitmq_text() {
        let e = parse_x_match(&table(&[("x-match", longstr("foo"))])).unwrap_err();
        assert_eq!(
            e.text,
            "PRECONDITION_FAILED - Invalid x-match field value <<\"foo\">>; expected all, any, all-with-x, or any-with-x"
        );
        let e = parse_x_match(&table(&[("x-match", AMQPValue::LongInt(1))])).unwrap_err();
        assert_eq!(e.text, "PRECONDITION_FAILED - Invalid x-match field type signedint (value 1); expected longstr");
    }
}
