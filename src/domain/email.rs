//! Email addresses: one normal form, so that uniqueness and login agree.
//!
//! Unicode is allowed (internationalised addresses), in one form: trimmed,
//! NFC-normalised, lower-cased and NFC-normalised again (lower case can undo
//! a composition: J̌ has no composed capital, ǰ has), so that the same address typed with
//! composed or decomposed accents or in another case is the same email.
//! White space, control characters and invisible format characters (zero
//! width spaces and joiners, bidi overrides, soft hyphens, BOM) are refused:
//! they make two different addresses look alike. Confusables from other
//! scripts (a Cyrillic `а` for a Latin `a`) are different characters and so
//! different addresses: each is unique on its own, and neither signs in as
//! the other. A trailing dot in the domain is refused rather than dropped.

use std::collections::HashMap;
use std::sync::LazyLock;

use unicode_normalization::UnicodeNormalization as _;
use unicode_normalization::char::{canonical_combining_class, compose, decompose_canonical};

use super::error::DomainError;
use super::text::is_invisible;

const MAX_LEN: usize = 254;
const MAX_LOCAL_LEN: usize = 64;

/// A validated, normalised email address: trimmed and lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Validates `raw` as the request field `field` and normalises it.
    pub fn parse(field: &str, raw: &str) -> Result<Self, DomainError> {
        let trimmed = raw.trim();
        let invalid = |why: &str| Err(DomainError::invalid(field, why));
        if trimmed.is_empty() {
            return invalid("must not be empty");
        }
        if trimmed.len() > MAX_LEN {
            return invalid("must be at most 254 bytes");
        }
        if trimmed
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || is_invisible(c))
        {
            return invalid("must not contain white space, control or invisible characters");
        }
        let normal = normal_form(trimmed);
        if normal.len() > MAX_LEN {
            return invalid("must be at most 254 bytes");
        }
        let trimmed = normal.as_str();
        let Some((local, domain)) = trimmed.rsplit_once('@') else {
            return invalid("must be an email address like name@example.com");
        };
        if local.is_empty() || local.len() > MAX_LOCAL_LEN || local.contains('@') {
            return invalid("the part before @ must be 1 to 64 bytes without @");
        }
        if !is_valid_domain(domain) {
            return invalid("the part after @ must be a domain like example.com");
        }
        Ok(Email(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A search by the start of an email (ListUsers' `email_prefix`), matched
/// the way emails are compared: case-insensitively, whatever the Unicode
/// form the prefix or the email was typed in.
///
/// An email matches when, in canonical decomposition (NFD) and lower case
/// with both Greek small sigmas taken for one, it starts with the prefix
/// without splitting a letter from its accents: "e" finds "eve", not "ève";
/// "è" finds "ève" and the letter with further accents. Lower-casing the
/// prefix character by character (Σ is σ wherever it stands) and comparing
/// decomposed is what makes every prefix of a way to type an email find it:
/// lower-casing a whole string writes a final ς for a Σ that ends a word,
/// and composition (NFC) across the prefix's end can make the stored email's
/// next character one the prefix does not end with.
///
/// `ranges` bound the emails that can match in code point (= UTF-8 byte,
/// collation "C") order, for the index; `matches` decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailPrefix {
    /// The comparison form of the prefix up to its last letter.
    letters: String,
    /// The accents typed after that letter, in canonical order.
    marks: Vec<char>,
    /// Every matching email lies in one of these ranges: at or after the
    /// first, and before the second if there is one.
    ranges: Vec<(String, Option<String>)>,
}

impl EmailPrefix {
    /// The prefix typed as the request field `field`, trimmed; `None` when
    /// empty (no filter). White space, control and invisible characters are
    /// refused, as in emails.
    pub fn parse(field: &str, raw: &str) -> Result<Option<EmailPrefix>, DomainError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        if trimmed
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || is_invisible(c))
        {
            return Err(DomainError::invalid(
                field,
                "must not contain white space, control or invisible characters",
            ));
        }
        if trimmed.len() > MAX_LEN {
            return Err(DomainError::invalid(field, "must be at most 254 bytes"));
        }
        let mut letters = comparison_form(trimmed);
        let mut marks = Vec::new();
        while let Some(mark) = letters
            .chars()
            .next_back()
            .filter(|c| canonical_combining_class(*c) != 0)
        {
            letters.pop();
            marks.push(mark);
        }
        marks.reverse();
        Ok(Some(EmailPrefix {
            letters,
            marks,
            ranges: ranges(trimmed),
        }))
    }

    /// The prefix's comparison form, the same for every way of typing it:
    /// what a page token is bound to.
    pub fn canonical(&self) -> String {
        let mut text = self.letters.clone();
        text.extend(&self.marks);
        text
    }

    /// The ranges, in code point order, that hold every email that
    /// matches: each from its first string (included) to its second
    /// (excluded), if any; one range unless the prefix ends in an accented
    /// letter (then one for each character that starts with the letter).
    pub fn ranges(&self) -> &[(String, Option<String>)] {
        &self.ranges
    }

    /// Whether `email` lies in one of the ranges.
    pub fn in_ranges(&self, email: &str) -> bool {
        self.ranges
            .iter()
            .any(|(from, to)| from.as_str() <= email && to.as_deref().is_none_or(|to| email < to))
    }

    /// Whether `email` (as stored, in any case) starts with this prefix.
    pub fn matches(&self, email: &str) -> bool {
        let form = comparison_form(email);
        let Some(rest) = form.strip_prefix(self.letters.as_str()) else {
            return false;
        };
        let run: Vec<char> = rest
            .chars()
            .take_while(|c| canonical_combining_class(*c) != 0)
            .collect();
        if self.marks.is_empty() {
            // A bare letter is the letter without accents.
            return run.is_empty();
        }
        // The typed accents, and any typed after them, in canonical order:
        // within each combining class, the typed ones come first.
        let mut classes: Vec<u8> = self
            .marks
            .iter()
            .map(|c| canonical_combining_class(*c))
            .collect();
        classes.dedup();
        classes.iter().all(|class| {
            let of = |marks: &[char]| -> Vec<char> {
                marks
                    .iter()
                    .copied()
                    .filter(|c| canonical_combining_class(*c) == *class)
                    .collect()
            };
            of(&run).starts_with(&of(&self.marks))
        })
    }
}

/// The one form of an email: NFC, lower case, and NFC again, because lower
/// case can undo a composition (J̌ has no composed capital; its small
/// letter ǰ has one), so that canonically equivalent addresses in any case
/// are one string.
fn normal_form(text: &str) -> String {
    text.nfc()
        .collect::<String>()
        .to_lowercase()
        .nfc()
        .collect()
}

/// The form in which prefixes and emails are compared: lower case character
/// by character (so that Σ is always σ), decomposed (NFD), ς as σ.
fn comparison_form(text: &str) -> String {
    text.chars()
        .flat_map(char::to_lowercase)
        .nfd()
        .map(|c| if c == 'ς' { 'σ' } else { c })
        .collect()
}

/// The ranges of stored emails (trimmed, NFC, lower case) that the typed
/// prefix `typed` may match, in code point order: those that start with
/// the part of the prefix that no later character can change, followed by
/// a character that can stand for the rest.
fn ranges(typed: &str) -> Vec<(String, Option<String>)> {
    let mut stable: Vec<char> = typed.nfc().collect();
    // Accents may be followed by others that canonical order puts before
    // them, and the letter they sit on may compose with those instead; a
    // Hangul syllable may take a final consonant: that last letter, with
    // its accents, may be any character that starts with it.
    let ends_in_accent = |c: char| {
        let mut last = c;
        decompose_canonical(c, |d| last = d);
        canonical_combining_class(last) != 0
    };
    let mut accents = false;
    while stable
        .last()
        .is_some_and(|c| canonical_combining_class(*c) != 0)
    {
        stable.pop();
        accents = true;
    }
    let open = stable
        .last()
        .is_some_and(|c| accents || ends_in_accent(*c) || composes_with_a_letter(*c));
    let letter: Option<String> = if open {
        stable.pop().map(|c| {
            let mut base: Vec<char> = c.to_lowercase().nfd().collect();
            while base
                .last()
                .is_some_and(|c| canonical_combining_class(*c) != 0)
            {
                base.pop();
            }
            base.into_iter().collect()
        })
    } else {
        None
    };
    let head: String = stable
        .into_iter()
        .flat_map(char::to_lowercase)
        .nfc()
        .collect();
    // A σ of the prefix may be a ς in the stored email, or the reverse:
    // they are neighbours (U+03C2, U+03C3), so one range holds both.
    let sigma = |text: &str| text.find(['σ', 'ς']);
    if let Some(at) = sigma(&head) {
        let head = &head[..at];
        return vec![(format!("{head}ς"), Some(format!("{head}τ")))];
    }
    let Some(letter) = letter.filter(|letter| !letter.is_empty()) else {
        let upper = successor(&head);
        return vec![(head, upper)];
    };
    if sigma(&letter).is_some() {
        return vec![(format!("{head}ς"), Some(format!("{head}τ")))];
    }
    // Each run of consecutive characters that start with the letter.
    let mut ranges: Vec<(String, Option<String>)> = Vec::new();
    let mut run: Option<(char, char)> = None;
    for c in starting_with(&letter) {
        match run {
            Some((first, last)) if u32::from(c) == u32::from(last) + 1 => {
                run = Some((first, c));
            }
            _ => {
                if let Some((first, last)) = run {
                    ranges.push((
                        format!("{head}{first}"),
                        successor(&format!("{head}{last}")),
                    ));
                }
                run = Some((c, c));
            }
        }
    }
    if let Some((first, last)) = run {
        ranges.push((
            format!("{head}{first}"),
            successor(&format!("{head}{last}")),
        ));
    }
    ranges
}

/// Every character whose canonical decomposition starts with `letter` (a
/// decomposed letter without accents), in code point order: the letter
/// itself, and each composition of it.
fn starting_with(letter: &str) -> Vec<char> {
    static BY_FIRST: LazyLock<HashMap<char, Vec<(char, String)>>> = LazyLock::new(|| {
        let mut by_first: HashMap<char, Vec<(char, String)>> = HashMap::new();
        for c in (0..=0x2FFFF).filter_map(char::from_u32) {
            let decomposed: String = std::iter::once(c).nfd().collect();
            if let Some(first) = decomposed.chars().next()
                && decomposed.chars().count() > 1
            {
                by_first.entry(first).or_default().push((c, decomposed));
            }
        }
        by_first
    });
    let mut found: Vec<char> = Vec::new();
    if let Some(first) = letter.chars().next() {
        if letter.chars().count() == 1 {
            found.push(first);
        }
        if let Some(composites) = BY_FIRST.get(&first) {
            found.extend(
                composites
                    .iter()
                    .filter(|(_, decomposed)| decomposed.starts_with(letter))
                    .map(|(c, _)| *c),
            );
        }
    }
    found.sort_unstable();
    found.dedup();
    found
}

/// Whether `c` composes with a following character that is not an accent
/// (canonical combining class 0): Hangul syllables and jamo, and the vowel
/// signs of some Indic scripts.
fn composes_with_a_letter(c: char) -> bool {
    static SECONDS: LazyLock<Vec<char>> = LazyLock::new(|| {
        let mut seconds: Vec<char> = Vec::new();
        for composite in (0..=0x2FFFF).filter_map(char::from_u32) {
            let mut parts = Vec::new();
            decompose_canonical(composite, |d| parts.push(d));
            if parts.len() > 1 {
                seconds.extend(
                    parts[1..]
                        .iter()
                        .filter(|d| canonical_combining_class(**d) == 0),
                );
            }
        }
        seconds.sort_unstable();
        seconds.dedup();
        seconds
    });
    SECONDS.iter().any(|second| compose(c, *second).is_some())
}

/// The first string after every string that starts with `text`, in code
/// point order; `None` when there is none (empty, or all U+10FFFF).
fn successor(text: &str) -> Option<String> {
    let mut chars: Vec<char> = text.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

fn is_valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.contains('.')
        && domain
            .split('.')
            .all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_surrounding_space() {
        let email = Email::parse("email", "  Alice@Example.COM ").map(Email::into_string);
        assert_eq!(email.ok().as_deref(), Some("alice@example.com"));
    }

    #[test]
    fn rejects_what_is_not_an_address() {
        for raw in [
            "",
            "   ",
            "alice",
            "@example.com",
            "alice@",
            "alice@localhost",
            "alice@example..com",
            "alice@example.com.",
            "ali ce@example.com",
            "alice@exa\u{0}mple.com",
            "alice@example.com..",
            "al\u{200B}ice@example.com",
            "alice\u{202E}@example.com",
            "\u{FEFF}alice@example.com",
            "alice@exam\u{00AD}ple.com",
        ] {
            assert!(Email::parse("email", raw).is_err(), "{raw:?}");
        }
    }

    fn parsed(raw: &str) -> String {
        Email::parse("email", raw).expect(raw).into_string()
    }

    fn range(from: &str, to: Option<&str>) -> (String, Option<String>) {
        (from.to_owned(), to.map(str::to_owned))
    }

    fn search(prefix: &str) -> EmailPrefix {
        EmailPrefix::parse("email_prefix", prefix)
            .expect(prefix)
            .expect(prefix)
    }

    #[test]
    fn a_prefix_finds_what_the_review_found_missing() {
        // The last code point after the prefix.
        let stored = parsed("a\u{10FFFF}b@example.com");
        assert!(search("A").in_ranges(&stored));
        assert!(search("A").matches(&stored));
        assert_eq!(search("\u{10FFFF}").ranges(), [range("\u{10FFFF}", None)]);
        assert_eq!(
            search("a\u{10FFFF}").ranges(),
            [range("a\u{10FFFF}", Some("b"))]
        );
        assert_eq!(
            search("a\u{10FFFF}@").ranges(),
            [range("a\u{10FFFF}@", Some("a\u{10FFFF}A"))]
        );
        // Σ typed in capitals finds σ and ς, wherever they stand.
        for stored in [parsed("ΣΑΣΑ@example.com"), parsed("ΣΑΣ@example.com")] {
            for prefix in ["ΣΑΣ", "σας", "σασ", "Σ"] {
                let search = search(prefix);
                assert!(search.matches(&stored), "{prefix} {stored}");
                assert!(search.in_ranges(&stored));
            }
        }
        assert_eq!(parsed("ΣΑΣ@example.com"), "σας@example.com");
    }

    #[test]
    fn a_bare_letter_is_not_an_accented_one() {
        let elodie = parsed("élodie@example.com");
        assert!(!search("e").matches(&elodie));
        assert!(search("É").matches(&elodie));
        assert!(search("E\u{301}L").matches(&elodie));
        assert!(!search("é").matches("eve@example.com"));
        // Accents typed first are found beside accents that sort before them.
        assert!(search("e\u{301}").matches(&parsed("e\u{301}\u{323}x@example.com")));
        assert!(!search("e\u{301}").matches(&parsed("e\u{300}x@example.com")));
        // An ASCII prefix's range is the prefix's own; a prefix that ends in
        // an accent leaves its last letter to `matches`.
        assert_eq!(search("ALICE").ranges(), [range("alice", Some("alicf"))]);
        assert_eq!(search("%").ranges(), [range("%", Some("&"))]);
        // … the characters that start with e: e, è to ë, ē to ě, …, ẹ to ệ.
        let accented = search("BÉ");
        assert!(accented.ranges().contains(&range("be", Some("bf"))));
        assert!(accented.ranges().contains(&range("bè", Some("bì"))));
        assert!(
            accented
                .ranges()
                .iter()
                .all(|(from, _)| from.starts_with('b'))
        );
        assert!(accented.in_ranges("bệ@example.com"));
        assert!(!accented.in_ranges("bf@example.com"));
        assert!(!accented.in_ranges("bé"[..1].to_owned().as_str()));
    }

    #[test]
    fn unicode_has_one_form_and_confusables_stay_apart() {
        // Composed and decomposed é, in either case, are one address.
        assert_eq!(
            parsed("jos\u{e9}@example.com"),
            parsed("JOSE\u{301}@Example.com")
        );
        assert_eq!(parsed("STRASSE@example.com"), "strasse@example.com");
        assert_eq!(parsed("Ünïcödé@bücher.example"), "ünïcödé@bücher.example");
        // A Cyrillic а is not a Latin a.
        assert_ne!(
            parsed("\u{430}lice@example.com"),
            parsed("alice@example.com")
        );
        // Lower case that undoes a composition is composed again.
        assert_eq!(
            parsed("J\u{30C}OE@example.com"),
            parsed("\u{1F0}oe@example.com")
        );
        assert_eq!(parsed("J\u{30C}OE@example.com"), "\u{1F0}oe@example.com");
        // Mixed case is one address.
        assert_eq!(parsed("ALICE@EXAMPLE.COM"), parsed("alice@example.com"));
    }
}
