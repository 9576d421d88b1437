//! Glob patterns compiled to the cheapest matcher that fits: `*` matches any run of
//! characters (including none); every other character is literal.

/// A compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Glob {
    /// `*`, or any pattern made only of stars.
    Any,
    /// No star: plain equality.
    Exact(Box<str>),
    /// `prefix*`.
    Prefix(Box<str>),
    /// `*suffix`.
    Suffix(Box<str>),
    /// Anything else: literal parts between stars, matched left to right.
    Parts {
        /// The text before the first star.
        first: Box<str>,
        /// The texts between stars, in order, none empty.
        middle: Box<[Box<str>]>,
        /// The text after the last star.
        last: Box<str>,
    },
}

impl Glob {
    pub(crate) fn new(pattern: &str) -> Self {
        if !pattern.contains('*') {
            return Self::Exact(pattern.into());
        }
        let parts: Vec<&str> = pattern.split('*').collect();
        // `split` on a string with at least one star yields at least two parts.
        let first = parts.first().copied().unwrap_or("");
        let last = parts.last().copied().unwrap_or("");
        let middle: Vec<Box<str>> = parts[1..parts.len() - 1]
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| Box::from(*p))
            .collect();
        match (first.is_empty(), middle.is_empty(), last.is_empty()) {
            (true, true, true) => Self::Any,
            (false, true, true) => Self::Prefix(first.into()),
            (true, true, false) => Self::Suffix(last.into()),
            _ => Self::Parts {
                first: first.into(),
                middle: middle.into(),
                last: last.into(),
            },
        }
    }

    /// True when this glob matches `text`. Never allocates.
    #[inline]
    pub(crate) fn matches(&self, text: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(e) => **e == *text,
            Self::Prefix(p) => text.starts_with(&**p),
            Self::Suffix(s) => text.ends_with(&**s),
            Self::Parts {
                first,
                middle,
                last,
            } => {
                if text.len() < first.len() + last.len() || !text.starts_with(&**first) {
                    return false;
                }
                if !text.ends_with(&**last) {
                    return false;
                }
                // Greedy leftmost search for the middle parts is exact for `*`-only globs:
                // taking the earliest occurrence of each part leaves the most room for the
                // rest.
                let mut rest = &text[first.len()..text.len() - last.len()];
                for part in middle.iter() {
                    match rest.find(&**part) {
                        Some(at) => rest = &rest[at + part.len()..],
                        None => return false,
                    }
                }
                true
            }
        }
    }

    /// True when every string this glob matches is also matched by `other` (a sound but
    /// incomplete check: it may say false for some covered pairs).
    pub(crate) fn covered_by(&self, other: &Glob) -> bool {
        match (other, self) {
            (Glob::Any, _) => true,
            (_, Glob::Exact(text)) => other.matches(text),
            (Glob::Prefix(p), Glob::Prefix(q)) => q.starts_with(&**p),
            (Glob::Suffix(s), Glob::Suffix(t)) => t.ends_with(&**s),
            (a, b) => a == b,
        }
    }
}

/// The textbook matcher: dynamic programming over pattern and text characters. Used by the
/// reference evaluator, so the compiled matcher above is checked against it.
pub fn glob_match_reference(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // dp[j]: pattern prefix of length i matches text prefix of length j.
    let mut dp = vec![false; t.len() + 1];
    dp[0] = true;
    for &pc in &p {
        let mut next = vec![false; t.len() + 1];
        if pc == '*' {
            let mut any = false;
            for j in 0..=t.len() {
                any = any || dp[j];
                next[j] = any;
            }
        } else {
            for j in 1..=t.len() {
                next[j] = dp[j - 1] && t[j - 1] == pc;
            }
        }
        dp = next;
    }
    dp[t.len()]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(Glob::new("*"), Glob::Any);
        assert_eq!(Glob::new("**"), Glob::Any);
        assert_eq!(Glob::new("scale_*"), Glob::Prefix("scale_".into()));
        assert_eq!(Glob::new("*_pod"), Glob::Suffix("_pod".into()));
        assert!(Glob::new("cluster:*:ns-*").matches("cluster:eu:ns-1"));
        assert!(!Glob::new("cluster:*:ns-*").matches("cluster:eu:ms-1"));
        assert!(Glob::new("a*a").matches("aa"));
        assert!(!Glob::new("a*a").matches("a"));
        assert!(Glob::new("ab*b*ab").matches("abbab"));
        assert!(!Glob::new("ab*b*ab").matches("abab"));
        assert!(Glob::new("exact").matches("exact"));
        assert!(!Glob::new("exact").matches("exact2"));
    }

    #[test]
    fn coverage_is_sound() {
        assert!(Glob::new("scale_up").covered_by(&Glob::new("scale_*")));
        assert!(Glob::new("scale_up_*").covered_by(&Glob::new("scale_*")));
        assert!(!Glob::new("scale_*").covered_by(&Glob::new("scale_up")));
        assert!(Glob::new("x*y").covered_by(&Glob::new("*")));
    }

    proptest! {
        #[test]
        fn compiled_agrees_with_reference(
            pattern in "[ab*:]{0,8}",
            text in "[ab:]{0,10}",
        ) {
            prop_assert_eq!(
                Glob::new(&pattern).matches(&text),
                glob_match_reference(&pattern, &text),
                "pattern {:?} text {:?}", pattern, text
            );
        }
    }
}
