//! Reading flag sets in flagd's flag definition format (JSON or YAML),
//! validating them and compiling their rules, with errors that name the file,
//! the flag and the problem.

use std::collections::BTreeMap;
use std::path::Path;

use foldhash::{HashMap, HashMapExt};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::rule::Rule;
use super::{Flag, FlagSet, FlagState};

/// The ConfigMap size limit: larger flag content is refused.
pub const MAX_CONTENT_BYTES: usize = 1024 * 1024;

/// One problem in flag content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}{problem}", .flag.as_ref().map(|f| format!("flag `{f}`: ")).unwrap_or_default())]
pub struct DefinitionError {
    /// The file (or source name) the problem is in.
    pub file: String,
    /// The flag, when the problem belongs to one.
    pub flag: Option<String>,
    /// What is wrong.
    pub problem: String,
}

/// A problem flagd tolerates when it loads a file and resolves at evaluation
/// time (an operator with the wrong arguments, a `$ref` to a missing
/// evaluator): the flag loads, the problem is reported as a warning naming
/// the file, the flag and the rule, and evaluation resolves it as flagd does.
pub type DefinitionWarning = DefinitionError;

/// Every problem found in a set of flag files (they are all reported, not
/// just the first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct DefinitionErrors(pub Vec<DefinitionError>);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(rename = "$schema")]
    _schema: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(rename = "$evaluators", default)]
    evaluators: Map<String, Value>,
    flags: BTreeMap<String, RawFlag>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlag {
    state: String,
    variants: serde_json::Map<String, Value>,
    /// `null`, `""` or absent: no default variant; the caller's code default
    /// is served when no targeting rule picks a variant (as flagd does).
    #[serde(rename = "defaultVariant", default)]
    default_variant: Option<String>,
    #[serde(default)]
    targeting: Option<Value>,
    #[serde(default)]
    metadata: Option<Value>,
}

/// A parsed, not yet merged, flag file.
pub struct ParsedFile {
    name: String,
    flags: Vec<(String, Flag)>,
    warnings: Vec<DefinitionWarning>,
}

/// Parses and compiles one file's content. `name` is used in messages; the
/// format is YAML for `.yaml`/`.yml` names, JSON otherwise.
pub fn parse_file(name: &str, content: &[u8]) -> Result<ParsedFile, DefinitionErrors> {
    let fail = |problem: String| {
        DefinitionErrors(vec![DefinitionError {
            file: name.to_owned(),
            flag: None,
            problem,
        }])
    };
    if content.len() > MAX_CONTENT_BYTES {
        return Err(fail(format!(
            "{} bytes is over the 1 MiB ConfigMap limit",
            content.len()
        )));
    }
    if content.iter().all(u8::is_ascii_whitespace) {
        return Err(fail("the file is empty".into()));
    }
    let is_yaml = Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    let raw: RawFile = if is_yaml {
        serde_yaml_ng::from_slice(content)
            .map_err(|e| fail(format!("not a valid flagd YAML flag set: {e}")))?
    } else {
        serde_json::from_slice(content)
            .map_err(|e| fail(format!("not a valid flagd JSON flag set: {e}")))?
    };
    let set_metadata = match raw.metadata.map(|m| metadata_map(&m)).transpose() {
        Ok(m) => m.unwrap_or_default(),
        Err(problem) => return Err(fail(format!("flag-set metadata: {problem}"))),
    };
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut flags = Vec::new();
    let mut file_budget = MAX_FILE_REF_NODES;
    for (key, raw_flag) in raw.flags {
        let mut problems = Vec::new();
        match compile_flag(
            &key,
            raw_flag,
            &raw.evaluators,
            &set_metadata,
            &mut file_budget,
            &mut problems,
        ) {
            Ok(flag) => flags.push((key.clone(), flag)),
            Err(problem) => errors.push(DefinitionError {
                file: name.to_owned(),
                flag: Some(key.clone()),
                problem,
            }),
        }
        warnings.extend(problems.into_iter().map(|problem| DefinitionWarning {
            file: name.to_owned(),
            flag: Some(key.clone()),
            problem,
        }));
    }
    if errors.is_empty() {
        Ok(ParsedFile {
            name: name.to_owned(),
            flags,
            warnings,
        })
    } else {
        Err(DefinitionErrors(errors))
    }
}

/// Flag or flag-set metadata: an object of strings, numbers and booleans (what
/// flagd's schema allows and OpenFeature's flag metadata can carry).
fn metadata_map(value: &Value) -> Result<Map<String, Value>, String> {
    let Value::Object(map) = value else {
        return Err(format!("metadata must be an object, got {value}"));
    };
    for (key, item) in map {
        if !(item.is_string() || item.is_number() || item.is_boolean()) {
            return Err(format!(
                "metadata `{key}` must be a string, number or boolean, got {item}"
            ));
        }
    }
    Ok(map.clone())
}

fn compile_flag(
    key: &str,
    raw: RawFlag,
    evaluators: &Map<String, Value>,
    set_metadata: &Map<String, Value>,
    file_budget: &mut usize,
    warnings: &mut Vec<String>,
) -> Result<Flag, String> {
    let state = match raw.state.as_str() {
        "ENABLED" => FlagState::Enabled,
        "DISABLED" => FlagState::Disabled,
        other => return Err(format!("state must be ENABLED or DISABLED, got {other:?}")),
    };
    if raw.variants.is_empty() {
        return Err("has no variants".into());
    }
    let variants: Vec<(String, Value)> = raw.variants.into_iter().collect();
    let default = match raw.default_variant.as_deref() {
        None | Some("") => None,
        Some(wanted) => Some(
            variants
                .iter()
                .position(|(name, _)| name == wanted)
                .ok_or_else(|| {
                    format!(
                        "defaultVariant {wanted:?} is not among its variants ({})",
                        variants
                            .iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?,
        ),
    };
    if key == crate::fault::FLAG {
        // A value the request path could not apply must not load.
        for (name, value) in &variants {
            crate::fault::FaultSpec::parse(value).map_err(|e| format!("variant {name:?}: {e}"))?;
        }
    }
    let targeting = match raw.targeting {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) if map.is_empty() => None,
        Some(rule) => match resolve(&rule, evaluators, file_budget) {
            Ok(resolved) => Some(
                Rule::compile(&resolved, warnings)
                    .map_err(|e| format!("targeting does not compile: {e}"))?,
            ),
            // flagd loads such a flag and answers PARSE_ERROR when it is
            // evaluated; so do we, with a warning at load.
            Err(RefError::Missing(name)) => {
                warnings.push(format!(
                    "targeting: `$ref` to unknown evaluator {name:?}: evaluations answer PARSE_ERROR"
                ));
                Some(Rule::unparseable())
            }
            Err(RefError::Bad(problem)) => return Err(problem),
        },
    };
    let mut metadata = set_metadata.clone();
    if let Some(m) = &raw.metadata {
        metadata.extend(metadata_map(m)?);
    }
    let index = variants
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (name.clone(), i))
        .collect::<HashMap<_, _>>();
    Ok(Flag {
        key: key.to_owned(),
        state,
        variants,
        index,
        default,
        targeting,
        metadata,
    })
}

/// Why `$ref`s could not be resolved.
enum RefError {
    /// A `$ref` names no evaluator: flagd loads the flag (PARSE_ERROR at
    /// evaluation).
    Missing(String),
    /// A malformed `$ref` or a cycle: the file is refused.
    Bad(String),
}

/// Nodes one flag's targeting may take from shared evaluators through
/// `$ref`s: evaluators that each use the previous one twice double at every
/// level, so a 1 MiB file could otherwise expand to gigabytes on a reload.
/// A file's own nodes are bounded by its size (1 MiB) and not counted.
const MAX_RULE_NODES: usize = 100_000;
/// The same for all flags of one file together (many flags each taking a
/// large evaluator multiply too).
const MAX_FILE_REF_NODES: usize = 1_000_000;
/// Nesting one flag's targeting may reach through `$ref`s (a chain of
/// evaluators each wrapping the next): the compiler and the evaluator
/// recurse on it. A file alone nests at most 128 deep (serde_json's limit).
const MAX_RULE_DEPTH: usize = 256;

/// Where the expansion of one flag's `$ref`s stands.
struct Expansion {
    /// The evaluators being expanded, outermost first (cycle detection).
    stack: Vec<String>,
    /// Nodes taken from evaluators so far.
    nodes: usize,
    /// What this flag may take: [`MAX_RULE_NODES`], or less when the
    /// file's budget has less left.
    limit: usize,
}

/// Resolves one flag's `$ref`s within [`MAX_RULE_NODES`], [`MAX_RULE_DEPTH`]
/// and what is left of the file's `budget` (which it then charges).
fn resolve(
    rule: &Value,
    evaluators: &Map<String, Value>,
    budget: &mut usize,
) -> Result<Value, RefError> {
    let mut expansion = Expansion {
        stack: Vec::new(),
        nodes: 0,
        limit: MAX_RULE_NODES.min(*budget),
    };
    let resolved = resolve_refs(rule, evaluators, &mut expansion, 0);
    *budget = budget.saturating_sub(expansion.nodes);
    resolved
}

/// Replaces every `{"$ref": NAME}` with the named shared evaluator, within
/// the expansion's limits.
fn resolve_refs(
    rule: &Value,
    evaluators: &Map<String, Value>,
    expansion: &mut Expansion,
    depth: usize,
) -> Result<Value, RefError> {
    if !expansion.stack.is_empty() {
        expansion.nodes += 1;
        if expansion.nodes > expansion.limit {
            return Err(RefError::Bad(if expansion.limit < MAX_RULE_NODES {
                format!(
                    "the file's targeting rules take more than {MAX_FILE_REF_NODES} nodes from `$ref`s"
                )
            } else {
                format!("targeting takes more than {MAX_RULE_NODES} nodes from `$ref`s")
            }));
        }
    }
    if depth > MAX_RULE_DEPTH {
        return Err(RefError::Bad(format!(
            "targeting nests deeper than {MAX_RULE_DEPTH} levels through `$ref`s"
        )));
    }
    match rule {
        Value::Object(map) if map.len() == 1 && map.contains_key("$ref") => {
            let name = map["$ref"]
                .as_str()
                .ok_or_else(|| RefError::Bad("`$ref` must name an evaluator".into()))?;
            if expansion.stack.iter().any(|s| s == name) {
                return Err(RefError::Bad(format!("`$ref` cycle through {name:?}")));
            }
            let target = evaluators
                .get(name)
                .ok_or_else(|| RefError::Missing(name.to_owned()))?;
            expansion.stack.push(name.to_owned());
            let resolved = resolve_refs(target, evaluators, expansion, depth + 1);
            expansion.stack.pop();
            resolved
        }
        Value::Object(map) => Ok(Value::Object(
            map.iter()
                .map(|(k, v)| {
                    Ok((
                        k.clone(),
                        resolve_refs(v, evaluators, expansion, depth + 1)?,
                    ))
                })
                .collect::<Result<_, RefError>>()?,
        )),
        Value::Array(items) => Ok(Value::Array(
            items
                .iter()
                .map(|v| resolve_refs(v, evaluators, expansion, depth + 1))
                .collect::<Result<_, _>>()?,
        )),
        other => Ok(other.clone()),
    }
}

/// Merges parsed files in order: a later file's flag replaces an earlier
/// one's (logged), as flagd does with several sources.
pub fn merge(files: Vec<ParsedFile>, revision: String) -> FlagSet {
    let mut flags: HashMap<String, Flag> = HashMap::new();
    let mut origin: HashMap<String, String> = HashMap::new();
    let mut warnings = Vec::new();
    for mut file in files {
        warnings.append(&mut file.warnings);
        for (key, flag) in file.flags {
            if let Some(previous) = origin.insert(key.clone(), file.name.clone()) {
                tracing::info!(flag = %key, from = %previous, by = %file.name, "flag overridden by a later file");
            }
            flags.insert(key, flag);
        }
    }
    FlagSet {
        flags,
        revision,
        warnings,
        fractional: super::FractionalVersion::default(),
    }
}

/// FNV-1a 64 over every source's content, in source order: the revision
/// reported in Admin/GetInfo and metrics. It identifies the content, not
/// where it was read from, so two pods serving the same flags (one from a
/// ConfigMap, one built in) report the same revision; the source is
/// reported beside it.
pub fn revision(sources: &[(String, Vec<u8>)]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (_name, content) in sources {
        for byte in content.iter().copied().chain([0u8]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}
