//! Targeting rules: JsonLogic with the operators flagd accepts, compiled once
//! per load into a tree of [`Rule`] nodes and evaluated per request without
//! re-parsing. flagd's own operators (`fractional`, `sem_ver`, `starts_with`,
//! `ends_with`) are implemented here too.
//!
//! Values are `Cow<Value>`: literals and context values are borrowed, so a
//! rule that only reads and compares allocates nothing for its operands.

use std::borrow::Cow;

use serde_json::{Map, Number, Value};

use super::FractionalVersion;
use super::cbor;
use super::murmur::murmur3_32;
use super::semver::{SemVerOp, Version};

/// A rule that cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CompileError(pub String);

/// A rule that failed while evaluating (the flag then serves its default,
/// with reason ERROR).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

/// What an evaluation can see besides the context data.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    /// The evaluation context (`targetingKey` and attributes).
    pub data: &'a Value,
    /// `$flagd.flagKey`.
    pub flag_key: &'a str,
    /// `$flagd.timestamp` (unix seconds).
    pub timestamp: u64,
    /// How `fractional` hashes its bucketing value.
    pub fractional: FractionalVersion,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Missing,
    MissingSome,
    If,
    Eq,
    StrictEq,
    Ne,
    StrictNe,
    Not,
    NotNot,
    Or,
    And,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Max,
    Min,
    Merge,
    In,
    Cat,
    Substr,
    StartsWith,
    EndsWith,
}

impl Op {
    fn parse(name: &str) -> Option<(Self, usize, usize)> {
        // (op, min args, max args)
        const MANY: usize = usize::MAX;
        Some(match name {
            "missing" => (Op::Missing, 0, MANY),
            "missing_some" => (Op::MissingSome, 2, 2),
            "if" | "?:" => (Op::If, 0, MANY),
            "==" => (Op::Eq, 2, 2),
            "===" => (Op::StrictEq, 2, 2),
            "!=" => (Op::Ne, 2, 2),
            "!==" => (Op::StrictNe, 2, 2),
            "!" => (Op::Not, 1, 1),
            "!!" => (Op::NotNot, 1, 1),
            "or" => (Op::Or, 1, MANY),
            "and" => (Op::And, 1, MANY),
            "<" => (Op::Lt, 2, 3),
            "<=" => (Op::Le, 2, 3),
            ">" => (Op::Gt, 2, 2),
            ">=" => (Op::Ge, 2, 2),
            "+" => (Op::Add, 0, MANY),
            "-" => (Op::Sub, 1, 2),
            "*" => (Op::Mul, 1, MANY),
            "/" => (Op::Div, 2, 2),
            "%" => (Op::Mod, 2, 2),
            "max" => (Op::Max, 0, MANY),
            "min" => (Op::Min, 0, MANY),
            "merge" => (Op::Merge, 0, MANY),
            "in" => (Op::In, 2, 2),
            "cat" => (Op::Cat, 0, MANY),
            "substr" => (Op::Substr, 2, 3),
            "starts_with" => (Op::StartsWith, 2, 2),
            "ends_with" => (Op::EndsWith, 2, 2),
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Iter {
    Map,
    Filter,
    All,
    None,
    Some,
}

/// A compiled targeting rule.
#[derive(Debug, Clone)]
pub struct Rule {
    root: Node,
    /// Whether the rule can read `$flagd.timestamp` (the clock is read only then).
    needs_time: bool,
}

#[derive(Debug, Clone)]
enum Node {
    Literal(Value),
    Array(Vec<Node>),
    /// `var` with a path known at compile time.
    Var {
        path: Vec<String>,
        default: Option<Box<Node>>,
    },
    /// `var` whose path is computed.
    DynVar {
        path: Box<Node>,
        default: Option<Box<Node>>,
    },
    Op(Op, Vec<Node>),
    Iter(Iter, Box<Node>, Box<Node>),
    Reduce(Box<Node>, Box<Node>, Box<Node>),
    Fractional {
        key: Option<Box<Node>>,
        buckets: Vec<(Node, Weight)>,
        /// The sum of the weights when all are literals (the common case:
        /// nothing to add up per evaluation).
        total: Option<u64>,
    },
    SemVer(Box<Node>, SemVerOp, Box<Node>),
    /// A rule flagd loads but cannot evaluate (a `$ref` to a missing
    /// evaluator): every evaluation is a PARSE_ERROR.
    Unparseable,
}

/// A `fractional` bucket's weight.
#[derive(Debug, Clone)]
enum Weight {
    Fixed(u64),
    /// A rule computing the weight per evaluation (flagd's nested weights).
    Computed(Node),
}

impl Rule {
    /// Compiles a JsonLogic rule (with any `$ref` already resolved). Uses of
    /// flagd's operators that flagd accepts at load and that evaluate to
    /// null (a `sem_ver` with an unknown operator, an operator with the
    /// wrong number of arguments, a weight that is not an integer) compile
    /// to null, each with a line in `warnings`.
    pub fn compile(rule: &Value, warnings: &mut Vec<String>) -> Result<Self, CompileError> {
        let root = compile(rule, warnings)?;
        let text = rule.to_string();
        // Conservative: any mention of $flagd, or a computed var path.
        let needs_time = text.contains("$flagd") || has_dynamic_var(&root);
        Ok(Rule { root, needs_time })
    }

    /// A rule whose every evaluation is a PARSE_ERROR (see `Node::Unparseable`).
    pub fn unparseable() -> Self {
        Rule {
            root: Node::Unparseable,
            needs_time: false,
        }
    }

    /// Whether evaluation needs `Env::timestamp` to be set.
    pub fn needs_time(&self) -> bool {
        self.needs_time
    }

    /// Evaluates the rule in `env`.
    pub fn evaluate<'a>(&'a self, env: &Env<'a>) -> Result<Cow<'a, Value>, EvalError> {
        eval(&self.root, env)
    }
}

fn args_of(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    }
}

fn has_dynamic_var(node: &Node) -> bool {
    match node {
        Node::DynVar { .. } => true,
        Node::Literal(_) | Node::Unparseable => false,
        Node::Var { default, .. } => default.as_deref().is_some_and(has_dynamic_var),
        Node::Array(items) | Node::Op(_, items) => items.iter().any(has_dynamic_var),
        Node::Iter(_, a, b) => has_dynamic_var(a) || has_dynamic_var(b),
        Node::Reduce(a, b, c) => has_dynamic_var(a) || has_dynamic_var(b) || has_dynamic_var(c),
        Node::Fractional { key, buckets, .. } => {
            key.as_deref().is_some_and(has_dynamic_var)
                || buckets.iter().any(|(n, w)| {
                    has_dynamic_var(n) || matches!(w, Weight::Computed(w) if has_dynamic_var(w))
                })
        }
        Node::SemVer(a, _, b) => has_dynamic_var(a) || has_dynamic_var(b),
    }
}

fn compile(rule: &Value, warnings: &mut Vec<String>) -> Result<Node, CompileError> {
    match rule {
        Value::Array(items) => {
            let nodes: Vec<Node> = items
                .iter()
                .map(|item| compile(item, warnings))
                .collect::<Result<_, _>>()?;
            // An array of literals is itself a literal: no copy per evaluation.
            if nodes.iter().all(|n| matches!(n, Node::Literal(_))) {
                Ok(Node::Literal(Value::Array(
                    nodes
                        .into_iter()
                        .filter_map(|n| match n {
                            Node::Literal(v) => Some(v),
                            _ => None,
                        })
                        .collect(),
                )))
            } else {
                Ok(Node::Array(nodes))
            }
        }
        Value::Object(map) if map.len() == 1 => {
            let (name, raw_args) = map
                .iter()
                .next()
                .ok_or_else(|| CompileError("empty rule".into()))?;
            compile_op(name, raw_args, warnings)
        }
        Value::Object(map) if map.is_empty() => Ok(Node::Literal(Value::Null)),
        Value::Object(map) => Err(CompileError(format!(
            "a rule object must have exactly one operator, found {}: {}",
            map.len(),
            map.keys().cloned().collect::<Vec<_>>().join(", ")
        ))),
        literal => Ok(Node::Literal(literal.clone())),
    }
}

fn compile_op(
    name: &str,
    raw_args: &Value,
    warnings: &mut Vec<String>,
) -> Result<Node, CompileError> {
    let args = args_of(raw_args);
    let arity = |min: usize, max: usize| {
        if args.len() < min || args.len() > max {
            let expected = if min == max {
                format!("{min}")
            } else if max == usize::MAX {
                format!("at least {min}")
            } else {
                format!("{min} to {max}")
            };
            Err(CompileError(format!(
                "`{name}` takes {expected} arguments, got {}",
                args.len()
            )))
        } else {
            Ok(())
        }
    };
    let mut many = |args: &[&Value]| {
        args.iter()
            .map(|a| compile(a, warnings))
            .collect::<Result<Vec<_>, _>>()
    };
    match name {
        "var" => {
            arity(0, 2)?;
            let default = args
                .get(1)
                .map(|d| compile(d, warnings).map(Box::new))
                .transpose()?;
            match args.first() {
                None => Ok(Node::Var {
                    path: Vec::new(),
                    default,
                }),
                Some(Value::String(path)) => Ok(Node::Var {
                    path: split_path(path),
                    default,
                }),
                Some(Value::Number(n)) => Ok(Node::Var {
                    path: vec![n.to_string()],
                    default,
                }),
                Some(Value::Null) => Ok(Node::Var {
                    path: Vec::new(),
                    default,
                }),
                Some(other) => Ok(Node::DynVar {
                    path: Box::new(compile(other, warnings)?),
                    default,
                }),
            }
        }
        "map" | "filter" | "all" | "none" | "some" => {
            arity(2, 2)?;
            let kind = match name {
                "map" => Iter::Map,
                "filter" => Iter::Filter,
                "all" => Iter::All,
                "none" => Iter::None,
                _ => Iter::Some,
            };
            Ok(Node::Iter(
                kind,
                Box::new(compile(args[0], warnings)?),
                Box::new(compile(args[1], warnings)?),
            ))
        }
        "reduce" => {
            arity(2, 3)?;
            let initial = match args.get(2) {
                Some(v) => compile(v, warnings)?,
                None => Node::Literal(Value::Null),
            };
            Ok(Node::Reduce(
                Box::new(compile(args[0], warnings)?),
                Box::new(compile(args[1], warnings)?),
                Box::new(initial),
            ))
        }
        "fractional" => compile_fractional(&args, warnings),
        "sem_ver" => {
            if let Err(CompileError(problem)) = arity(3, 3) {
                return Ok(tolerated(warnings, problem));
            }
            let op = match args[1] {
                Value::String(s) => SemVerOp::parse(s),
                _ => None,
            };
            let Some(op) = op else {
                let problem = format!(
                    "`sem_ver` operator must be one of = != < <= > >= ^ ~, got {}",
                    args[1]
                );
                return Ok(tolerated(warnings, problem));
            };
            Ok(Node::SemVer(
                Box::new(compile(args[0], warnings)?),
                op,
                Box::new(compile(args[2], warnings)?),
            ))
        }
        other => {
            let (op, min, max) = Op::parse(other)
                .ok_or_else(|| CompileError(format!("unknown operator `{other}`")))?;
            if let Err(CompileError(problem)) = arity(min, max) {
                // flagd's own string operators evaluate to null on bad
                // arguments; JsonLogic's standard operators are refused.
                if matches!(op, Op::StartsWith | Op::EndsWith) {
                    return Ok(tolerated(warnings, problem));
                }
                return Err(CompileError(problem));
            }
            Ok(Node::Op(op, many(&args)?))
        }
    }
}

/// Records a problem flagd tolerates at load time; the operator evaluates
/// to null (the flag's default variant), as in flagd.
fn tolerated(warnings: &mut Vec<String>, problem: String) -> Node {
    warnings.push(format!("targeting: {problem}: evaluates to null"));
    Node::Literal(Value::Null)
}

fn compile_fractional(args: &[&Value], warnings: &mut Vec<String>) -> Result<Node, CompileError> {
    let (key, buckets) = match args.first() {
        None => {
            return Ok(tolerated(
                warnings,
                "`fractional` needs at least one bucket".into(),
            ));
        }
        // A first argument that is not a bucket array is the bucketing key.
        Some(first) if !first.is_array() => (Some(Box::new(compile(first, warnings)?)), &args[1..]),
        Some(_) => (None, args),
    };
    if buckets.is_empty() {
        return Ok(tolerated(
            warnings,
            "`fractional` needs at least one bucket".into(),
        ));
    }
    let mut compiled = Vec::with_capacity(buckets.len());
    for bucket in buckets {
        let items = match bucket.as_array() {
            Some(items) if !items.is_empty() && items.len() <= 2 => items,
            _ => {
                let problem =
                    format!("`fractional` bucket must be [variant, weight], got {bucket}");
                return Ok(tolerated(warnings, problem));
            }
        };
        let weight = match items.get(1) {
            None => Weight::Fixed(1),
            Some(Value::Number(n)) => match literal_weight(n) {
                Some(w) => Weight::Fixed(w),
                None => {
                    let problem = format!("`fractional` weight must be an integer, got {n}");
                    return Ok(tolerated(warnings, problem));
                }
            },
            Some(rule @ Value::Object(_)) => Weight::Computed(compile(rule, warnings)?),
            Some(other) => {
                let problem = format!("`fractional` weight must be a number, got {other}");
                return Ok(tolerated(warnings, problem));
            }
        };
        compiled.push((compile(&items[0], warnings)?, weight));
    }
    // Saturating: a huge weight (found by fuzzing: 2.7e89) must make the
    // total too large (null, as flagd caps it), never wrap to a small one.
    let total = compiled.iter().try_fold(0u64, |sum, (_, w)| match w {
        Weight::Fixed(w) => Some(sum.saturating_add(*w)),
        Weight::Computed(_) => None,
    });
    Ok(Node::Fractional {
        key,
        buckets: compiled,
        total,
    })
}

/// A weight as flagd takes it: an integer, negative ones clamped to zero (a
/// rollout calculation can produce them); `None` for a fraction.
fn literal_weight(n: &Number) -> Option<u64> {
    if let Some(w) = n.as_i64() {
        return Some(w.max(0).unsigned_abs());
    }
    if let Some(w) = n.as_u64() {
        return Some(w);
    }
    let w = n.as_f64()?;
    if w.fract() != 0.0 {
        return None;
    }
    Some(if w <= 0.0 {
        0
    } else {
        w.min(u64::MAX as f64) as u64
    })
}

fn split_path(path: &str) -> Vec<String> {
    if path.is_empty() {
        Vec::new()
    } else {
        path.split('.').map(str::to_owned).collect()
    }
}

const NULL: Value = Value::Null;

fn num(n: f64) -> Cow<'static, Value> {
    Cow::Owned(Number::from_f64(n).map_or(Value::Null, Value::Number))
}

fn boolean(b: bool) -> Cow<'static, Value> {
    Cow::Owned(Value::Bool(b))
}

/// JsonLogic truthiness: false for null, false, 0, "", [].
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(_) => true,
    }
}

fn to_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s.trim().is_empty() => Some(0.0),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::Null => Some(0.0),
        Value::Array(a) if a.is_empty() => Some(0.0),
        Value::Array(a) if a.len() == 1 => to_number(&a[0]),
        _ => None,
    }
}

fn to_text(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed("null"),
        Value::Number(n) => Cow::Owned(match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        }),
        Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Value::Array(a) => Cow::Owned(
            a.iter()
                .map(|x| to_text(x).into_owned())
                .collect::<Vec<_>>()
                .join(","),
        ),
        Value::Object(_) => Cow::Borrowed("[object Object]"),
    }
}

/// JavaScript-style loose equality, as JsonLogic's `==`.
fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Null, _) | (_, Value::Null) => false,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Number(_), Value::Number(_)) => a.as_f64() == b.as_f64(),
        (Value::Array(_) | Value::Object(_), Value::Array(_) | Value::Object(_)) => false,
        (Value::Array(_), _) => loose_eq(&Value::String(to_text(a).into_owned()), b),
        (_, Value::Array(_)) => loose_eq(a, &Value::String(to_text(b).into_owned())),
        (Value::Object(_), _) | (_, Value::Object(_)) => false,
        _ => match (to_number(a), to_number(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    }
}

fn strict_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => a.as_f64() == b.as_f64(),
        (Value::Array(_) | Value::Object(_), _) => false,
        _ => a == b,
    }
}

/// `<` with JavaScript semantics: strings compare as strings, else numbers.
fn less(a: &Value, b: &Value, or_equal: bool) -> bool {
    if let (Value::String(x), Value::String(y)) = (a, b) {
        return if or_equal { x <= y } else { x < y };
    }
    match (to_number(a), to_number(b)) {
        (Some(x), Some(y)) => {
            if or_equal {
                x <= y
            } else {
                x < y
            }
        }
        _ => false,
    }
}

fn lookup<'a>(data: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut current = data;
    for segment in path {
        current = match current {
            Value::Object(map) => map.get(segment.as_str())?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

fn lookup_var<'a>(env: &Env<'a>, path: &[String]) -> Option<Cow<'a, Value>> {
    if path.first().is_some_and(|p| p == "$flagd") {
        return match path.get(1).map(String::as_str) {
            Some("flagKey") if path.len() == 2 => {
                Some(Cow::Owned(Value::String(env.flag_key.to_owned())))
            }
            Some("timestamp") if path.len() == 2 => Some(Cow::Owned(Value::from(env.timestamp))),
            None => {
                let mut map = Map::new();
                map.insert("flagKey".into(), Value::String(env.flag_key.to_owned()));
                map.insert("timestamp".into(), Value::from(env.timestamp));
                Some(Cow::Owned(Value::Object(map)))
            }
            _ => None,
        };
    }
    lookup(env.data, path).map(Cow::Borrowed)
}

fn eval<'a>(node: &'a Node, env: &Env<'a>) -> Result<Cow<'a, Value>, EvalError> {
    match node {
        Node::Literal(v) => Ok(Cow::Borrowed(v)),
        Node::Array(items) => Ok(Cow::Owned(Value::Array(
            items
                .iter()
                .map(|n| eval(n, env).map(Cow::into_owned))
                .collect::<Result<_, _>>()?,
        ))),
        Node::Var { path, default } => match lookup_var(env, path) {
            Some(v) if !v.is_null() => Ok(v),
            _ => match default {
                Some(d) => eval(d, env),
                None => Ok(Cow::Borrowed(&NULL)),
            },
        },
        Node::DynVar { path, default } => {
            let path = eval(path, env)?;
            let segments = split_path(&to_text(&path));
            match lookup_var(env, &segments) {
                Some(v) if !v.is_null() => Ok(Cow::Owned(v.into_owned())),
                _ => match default {
                    Some(d) => eval(d, env),
                    None => Ok(Cow::Borrowed(&NULL)),
                },
            }
        }
        Node::Op(op, args) => eval_op(*op, args, env),
        Node::Iter(kind, source, body) => {
            let source = eval(source, env)?;
            let items: &[Value] = match source.as_ref() {
                Value::Array(items) => items,
                _ => &[],
            };
            let mut out = Vec::new();
            for item in items {
                let inner = Env { data: item, ..*env };
                let result = eval(body, &inner)?;
                match kind {
                    Iter::Map => out.push(result.into_owned()),
                    Iter::Filter => {
                        if truthy(&result) {
                            out.push(item.clone());
                        }
                    }
                    Iter::All => {
                        if !truthy(&result) {
                            return Ok(boolean(false));
                        }
                    }
                    Iter::None => {
                        if truthy(&result) {
                            return Ok(boolean(false));
                        }
                    }
                    Iter::Some => {
                        if truthy(&result) {
                            return Ok(boolean(true));
                        }
                    }
                }
            }
            Ok(match kind {
                Iter::Map | Iter::Filter => Cow::Owned(Value::Array(out)),
                Iter::All => boolean(!items.is_empty()),
                Iter::None => boolean(true),
                Iter::Some => boolean(false),
            })
        }
        Node::Reduce(source, body, initial) => {
            let source = eval(source, env)?;
            let mut accumulator = eval(initial, env)?.into_owned();
            if let Value::Array(items) = source.as_ref() {
                for item in items {
                    let mut scope = Map::new();
                    scope.insert("current".into(), item.clone());
                    scope.insert("accumulator".into(), accumulator);
                    let scope = Value::Object(scope);
                    let inner = Env {
                        data: &scope,
                        ..*env
                    };
                    accumulator = eval(body, &inner)?.into_owned();
                }
            }
            Ok(Cow::Owned(accumulator))
        }
        Node::Fractional {
            key,
            buckets,
            total,
        } => fractional(key.as_deref(), buckets, *total, env),
        Node::SemVer(left, op, right) => {
            let (l, r) = (eval(left, env)?, eval(right, env)?);
            let parse = |v: &Value| Version::parse(&to_text(v));
            match (parse(&l), parse(&r)) {
                (Some(l), Some(r)) => Ok(boolean(op.holds(&l, &r))),
                // flagd: not a version, null (the default variant).
                _ => Ok(Cow::Borrowed(&NULL)),
            }
        }
        Node::Unparseable => Err(EvalError(
            "the targeting rule refers to a missing evaluator".into(),
        )),
    }
}

/// flagd caps the sum of a `fractional`'s weights at `i32::MAX`.
const MAX_TOTAL_WEIGHT: u64 = i32::MAX as u64;

fn fractional<'a>(
    key: Option<&'a Node>,
    buckets: &'a [(Node, Weight)],
    total: Option<u64>,
    env: &Env<'a>,
) -> Result<Cow<'a, Value>, EvalError> {
    let total = match total {
        Some(total) => total,
        None => {
            let mut sum = 0u64;
            for (_, weight) in buckets {
                match computed_weight(weight, env)? {
                    Some(w) => sum = sum.saturating_add(w),
                    None => return Ok(Cow::Borrowed(&NULL)),
                }
            }
            sum
        }
    };
    if total == 0 || total > MAX_TOTAL_WEIGHT {
        return Ok(Cow::Borrowed(&NULL));
    }
    let hash = match key {
        Some(key) => {
            let key = eval(key, env)?;
            match (env.fractional, key.as_ref()) {
                (_, Value::Null) => return Ok(Cow::Borrowed(&NULL)),
                (FractionalVersion::V2, Value::String(s)) => murmur3_32(&[s.as_bytes()], 0),
                (FractionalVersion::V2, _) => return Ok(Cow::Borrowed(&NULL)),
                // An array is a bucket, not a bucketing value (the design's rule).
                (FractionalVersion::V3, Value::Array(_)) => return Ok(Cow::Borrowed(&NULL)),
                (FractionalVersion::V3, value) => cbor::hash(value),
            }
        }
        None => match env.data.get("targetingKey") {
            Some(Value::String(tk)) if !tk.is_empty() => match env.fractional {
                FractionalVersion::V2 => murmur3_32(&[env.flag_key.as_bytes(), tk.as_bytes()], 0),
                FractionalVersion::V3 => cbor::hash_pair(env.flag_key, tk),
            },
            _ => return Ok(Cow::Borrowed(&NULL)),
        },
    };
    let bucket = (u64::from(hash) * total) >> 32;
    let mut cumulative = 0u64;
    for (variant, weight) in buckets {
        cumulative += match weight {
            Weight::Fixed(w) => *w,
            Weight::Computed(_) => computed_weight(weight, env)?.unwrap_or(0),
        };
        if bucket < cumulative {
            return eval(variant, env);
        }
    }
    Ok(Cow::Borrowed(&NULL))
}

/// A bucket's weight for this evaluation; `None` when a computed weight is
/// not an integer (flagd then gives null).
fn computed_weight(weight: &Weight, env: &Env<'_>) -> Result<Option<u64>, EvalError> {
    match weight {
        Weight::Fixed(w) => Ok(Some(*w)),
        Weight::Computed(rule) => Ok(match eval(rule, env)?.as_ref() {
            Value::Number(n) => literal_weight(n),
            _ => None,
        }),
    }
}

fn eval_op<'a>(op: Op, args: &'a [Node], env: &Env<'a>) -> Result<Cow<'a, Value>, EvalError> {
    let arg = |i: usize| -> Result<Cow<'a, Value>, EvalError> {
        match args.get(i) {
            Some(n) => eval(n, env),
            None => Ok(Cow::Borrowed(&NULL)),
        }
    };
    let numbers = || -> Result<Vec<f64>, EvalError> {
        args.iter()
            .map(|n| {
                let v = eval(n, env)?;
                to_number(&v).ok_or_else(|| EvalError(format!("not a number: {v}")))
            })
            .collect()
    };
    Ok(match op {
        Op::If => {
            let mut i = 0;
            while i + 1 < args.len() {
                if truthy(eval(&args[i], env)?.as_ref()) {
                    return eval(&args[i + 1], env);
                }
                i += 2;
            }
            if i < args.len() {
                eval(&args[i], env)?
            } else {
                Cow::Borrowed(&NULL)
            }
        }
        Op::Or => {
            let mut last = Cow::Borrowed(&NULL);
            for n in args {
                last = eval(n, env)?;
                if truthy(&last) {
                    return Ok(last);
                }
            }
            last
        }
        Op::And => {
            let mut last = Cow::Borrowed(&NULL);
            for n in args {
                last = eval(n, env)?;
                if !truthy(&last) {
                    return Ok(last);
                }
            }
            last
        }
        Op::Eq => boolean(loose_eq(arg(0)?.as_ref(), arg(1)?.as_ref())),
        Op::Ne => boolean(!loose_eq(arg(0)?.as_ref(), arg(1)?.as_ref())),
        Op::StrictEq => boolean(strict_eq(arg(0)?.as_ref(), arg(1)?.as_ref())),
        Op::StrictNe => boolean(!strict_eq(arg(0)?.as_ref(), arg(1)?.as_ref())),
        Op::Not => boolean(!truthy(arg(0)?.as_ref())),
        Op::NotNot => boolean(truthy(arg(0)?.as_ref())),
        Op::Lt | Op::Le => {
            let or_equal = op == Op::Le;
            let (a, b) = (arg(0)?, arg(1)?);
            if args.len() == 3 {
                let c = arg(2)?;
                boolean(less(&a, &b, or_equal) && less(&b, &c, or_equal))
            } else {
                boolean(less(&a, &b, or_equal))
            }
        }
        Op::Gt => boolean(less(arg(1)?.as_ref(), arg(0)?.as_ref(), false)),
        Op::Ge => boolean(less(arg(1)?.as_ref(), arg(0)?.as_ref(), true)),
        Op::Add => num(numbers()?.iter().sum()),
        Op::Mul => num(numbers()?.iter().product()),
        Op::Sub => {
            let n = numbers()?;
            num(if n.len() == 1 { -n[0] } else { n[0] - n[1] })
        }
        Op::Div => {
            let n = numbers()?;
            if n[1] == 0.0 {
                return Err(EvalError("division by zero".into()));
            }
            num(n[0] / n[1])
        }
        Op::Mod => {
            let n = numbers()?;
            if n[1] == 0.0 {
                return Err(EvalError("modulo by zero".into()));
            }
            num(n[0] % n[1])
        }
        Op::Max => {
            let n = numbers()?;
            if n.is_empty() {
                Cow::Borrowed(&NULL)
            } else {
                num(n.into_iter().fold(f64::NEG_INFINITY, f64::max))
            }
        }
        Op::Min => {
            let n = numbers()?;
            if n.is_empty() {
                Cow::Borrowed(&NULL)
            } else {
                num(n.into_iter().fold(f64::INFINITY, f64::min))
            }
        }
        Op::Merge => {
            let mut out = Vec::new();
            for n in args {
                match eval(n, env)?.into_owned() {
                    Value::Array(items) => out.extend(items),
                    other => out.push(other),
                }
            }
            Cow::Owned(Value::Array(out))
        }
        Op::In => {
            let (needle, haystack) = (arg(0)?, arg(1)?);
            boolean(match haystack.as_ref() {
                Value::String(s) => s.contains(to_text(&needle).as_ref()),
                Value::Array(items) => items.iter().any(|item| strict_eq(item, &needle)),
                _ => false,
            })
        }
        Op::Cat => {
            let mut out = String::new();
            for n in args {
                out.push_str(&to_text(eval(n, env)?.as_ref()));
            }
            Cow::Owned(Value::String(out))
        }
        Op::Substr => {
            let text = arg(0)?;
            let chars: Vec<char> = to_text(&text).chars().collect();
            let len = chars.len() as i64;
            let start = to_number(arg(1)?.as_ref()).unwrap_or(0.0) as i64;
            let start = if start < 0 {
                (len + start).max(0)
            } else {
                start.min(len)
            };
            let end = match args.get(2) {
                None => len,
                Some(_) => {
                    let count = to_number(arg(2)?.as_ref()).unwrap_or(0.0) as i64;
                    if count < 0 {
                        (len + count).max(start)
                    } else {
                        start.saturating_add(count).min(len)
                    }
                }
            };
            Cow::Owned(Value::String(
                chars[start as usize..end.max(start) as usize]
                    .iter()
                    .collect(),
            ))
        }
        Op::StartsWith | Op::EndsWith => {
            let (a, b) = (arg(0)?, arg(1)?);
            match (a.as_ref(), b.as_ref()) {
                (Value::String(a), Value::String(b)) => boolean(if op == Op::StartsWith {
                    a.starts_with(b.as_str())
                } else {
                    a.ends_with(b.as_str())
                }),
                // flagd: null, not false, for a non-string (so the default
                // variant is served rather than a "false" variant).
                _ => Cow::Borrowed(&NULL),
            }
        }
        Op::Missing => {
            let mut keys: Vec<Value> = Vec::new();
            for n in args {
                match eval(n, env)?.into_owned() {
                    Value::Array(items) => keys.extend(items),
                    other => keys.push(other),
                }
            }
            Cow::Owned(Value::Array(missing(&keys, env)))
        }
        Op::MissingSome => {
            let need = to_number(arg(0)?.as_ref()).unwrap_or(0.0);
            let keys = match arg(1)?.into_owned() {
                Value::Array(items) => items,
                other => vec![other],
            };
            let absent = missing(&keys, env);
            if (keys.len() - absent.len()) as f64 >= need {
                Cow::Owned(Value::Array(Vec::new()))
            } else {
                Cow::Owned(Value::Array(absent))
            }
        }
    })
}

fn missing(keys: &[Value], env: &Env<'_>) -> Vec<Value> {
    keys.iter()
        .filter(|key| {
            let path = split_path(&to_text(key));
            match lookup_var(env, &path) {
                None => true,
                Some(v) => v.is_null() || v.as_str() == Some(""),
            }
        })
        .cloned()
        .collect()
}
