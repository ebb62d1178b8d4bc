//! flagd's `sem_ver` comparisons over semantic versions (a leading `v`
//! allowed; `1.2` means `1.2.0`).

use std::cmp::Ordering;

/// A parsed version: numeric core and pre-release identifiers (build
/// metadata is ignored for precedence, as semver says).
#[derive(Debug, PartialEq, Eq)]
pub struct Version {
    core: [u64; 3],
    pre: Vec<Ident>,
}

#[derive(Debug, PartialEq, Eq)]
enum Ident {
    Num(u64),
    Alpha(String),
}

impl Version {
    /// Parses `v1.2.3-rc.1+build`; `None` when malformed.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let text = text.strip_prefix(['v', 'V']).unwrap_or(text);
        let without_build = text.split('+').next()?;
        let (core, pre) = match without_build.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (without_build, None),
        };
        let mut numbers = [0u64; 3];
        let parts: Vec<&str> = core.split('.').collect();
        if parts.is_empty() || parts.len() > 3 {
            return None;
        }
        for (slot, part) in numbers.iter_mut().zip(&parts) {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *slot = part.parse().ok()?;
        }
        let pre = match pre {
            None => Vec::new(),
            Some(pre) => pre
                .split('.')
                .map(|id| {
                    if id.is_empty() {
                        None
                    } else if id.bytes().all(|b| b.is_ascii_digit()) {
                        id.parse().ok().map(Ident::Num)
                    } else {
                        Some(Ident::Alpha(id.to_owned()))
                    }
                })
                .collect::<Option<Vec<_>>>()?,
        };
        Some(Self { core: numbers, pre })
    }

    fn precedence(&self, other: &Self) -> Ordering {
        self.core
            .cmp(&other.core)
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    for (a, b) in self.pre.iter().zip(&other.pre) {
                        let ord = match (a, b) {
                            (Ident::Num(x), Ident::Num(y)) => x.cmp(y),
                            (Ident::Num(_), Ident::Alpha(_)) => Ordering::Less,
                            (Ident::Alpha(_), Ident::Num(_)) => Ordering::Greater,
                            (Ident::Alpha(x), Ident::Alpha(y)) => x.cmp(y),
                        };
                        if ord != Ordering::Equal {
                            return ord;
                        }
                    }
                    self.pre.len().cmp(&other.pre.len())
                }
            })
    }
}

/// A `sem_ver` operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SemVerOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// Same major version.
    Caret,
    /// Same major and minor version.
    Tilde,
}

impl SemVerOp {
    /// The operator for its symbol.
    pub fn parse(symbol: &str) -> Option<Self> {
        Some(match symbol {
            "=" => SemVerOp::Eq,
            "!=" => SemVerOp::Ne,
            "<" => SemVerOp::Lt,
            "<=" => SemVerOp::Le,
            ">" => SemVerOp::Gt,
            ">=" => SemVerOp::Ge,
            "^" => SemVerOp::Caret,
            "~" => SemVerOp::Tilde,
            _ => return None,
        })
    }

    /// `left OP right`.
    pub fn holds(self, left: &Version, right: &Version) -> bool {
        let ord = left.precedence(right);
        match self {
            SemVerOp::Eq => ord == Ordering::Equal,
            SemVerOp::Ne => ord != Ordering::Equal,
            SemVerOp::Lt => ord == Ordering::Less,
            SemVerOp::Le => ord != Ordering::Greater,
            SemVerOp::Gt => ord == Ordering::Greater,
            SemVerOp::Ge => ord != Ordering::Less,
            SemVerOp::Caret => left.core[0] == right.core[0],
            SemVerOp::Tilde => left.core[..2] == right.core[..2],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(a: &str, op: &str, b: &str) -> bool {
        let op = SemVerOp::parse(op).expect("op");
        op.holds(
            &Version::parse(a).expect("a"),
            &Version::parse(b).expect("b"),
        )
    }

    #[test]
    fn comparisons() {
        assert!(check("1.2.3", "=", "v1.2.3"));
        assert!(check("v1.2.3", "!=", "1.2.4"));
        assert!(check("1.2.3", "<", "1.10.0"));
        assert!(check("1.0.0-alpha", "<", "1.0.0-alpha.1"));
        assert!(check("1.0.0-alpha.1", "<", "1.0.0-beta"));
        assert!(check("1.0.0-rc.1", "<", "1.0.0"));
        assert!(check("2.0.0", ">", "1.99.99"));
        assert!(check("1.2.3", ">=", "1.2.3"));
        assert!(check("1.2.3", "<=", "1.2.3+build.5"));
        assert!(check("1.9.0", "^", "1.0.0"));
        assert!(!check("2.0.0", "^", "1.0.0"));
        assert!(check("1.2.9", "~", "1.2.0"));
        assert!(!check("1.3.0", "~", "1.2.0"));
        assert!(check("v1.2", "=", "1.2.0"));
    }

    #[test]
    fn malformed_versions_do_not_parse() {
        for bad in ["", "x.y.z", "1.2.3.4", "1..2", "1.2.3-", "1.2.3-a..b"] {
            assert!(Version::parse(bad).is_none(), "{bad:?}");
        }
        assert!(SemVerOp::parse("=>").is_none());
    }
}
