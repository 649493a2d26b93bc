//! Search queries as users type them, parsed once for every backend: the
//! backend renders the tokens in its own full-text syntax (FTS5 for SQLite),
//! always quoting terms, so no user text is query syntax by accident.

/// One piece of a search query as the user typed it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    /// A word or a "quoted phrase", with a trailing `*` for a prefix.
    Term {
        text: String,
        prefix: bool,
    },
    Or,
    Not,
    And,
    Open,
    Close,
}

fn pieces(input: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '(' || c == ')' {
            chars.next();
            out.push(if c == '(' { Piece::Open } else { Piece::Close });
        } else if c == '"' {
            chars.next();
            let mut text = String::new();
            for c in chars.by_ref() {
                if c == '"' {
                    break;
                }
                text.push(c);
            }
            let prefix = chars.peek() == Some(&'*');
            if prefix {
                chars.next();
            }
            out.push(Piece::Term { text, prefix });
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '"' || c == '(' || c == ')' {
                    break;
                }
                word.push(c);
                chars.next();
            }
            out.push(match word.as_str() {
                "OR" => Piece::Or,
                "NOT" => Piece::Not,
                "AND" => Piece::And,
                _ => {
                    let prefix = word.ends_with('*');
                    Piece::Term {
                        text: word.trim_end_matches('*').to_owned(),
                        prefix,
                    }
                }
            });
        }
    }
    out
}

/// One token of a parsed query, ready for a backend to render in its own
/// full-text syntax: terms, and the operators between them (an `And` is
/// inserted wherever two terms meet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Token {
    /// A word or phrase, matched as a prefix when `prefix`.
    Term {
        /// The text.
        text: String,
        /// `glac*`.
        prefix: bool,
    },
    /// Both sides must match.
    And,
    /// Either side.
    Or,
    /// The left side but not the right.
    Not,
    /// `(`
    Open,
    /// `)`
    Close,
}

/// Parses what a user typed: words (`glacier`), prefixes (`glac*`),
/// `"quoted phrases"`, `OR`, `NOT`, `AND` (implied between terms) and
/// parentheses. A misplaced operator is an error that says what to write
/// instead.
pub fn parse(input: &str) -> Result<Vec<Token>, String> {
    let mut out: Vec<Token> = Vec::new();
    let mut depth = 0i32;
    // Whether the last token can be followed by an operator.
    let mut after_term = false;
    for piece in pieces(input) {
        match piece {
            Piece::Term { text, prefix } => {
                if text.chars().all(|c| !c.is_alphanumeric()) {
                    continue; // punctuation alone matches nothing
                }
                if after_term {
                    out.push(Token::And);
                }
                out.push(Token::Term { text, prefix });
                after_term = true;
            }
            Piece::Or | Piece::Not | Piece::And => {
                let (word, token) = match piece {
                    Piece::Or => ("OR", Token::Or),
                    Piece::Not => ("NOT", Token::Not),
                    _ => ("AND", Token::And),
                };
                if !after_term {
                    return Err(format!(
                        "{word} needs a word before it, as in `glacier {word} retreat`"
                    ));
                }
                out.push(token);
                after_term = false;
            }
            Piece::Open => {
                if after_term {
                    out.push(Token::And);
                }
                depth += 1;
                out.push(Token::Open);
                after_term = false;
            }
            Piece::Close => {
                if depth == 0 {
                    return Err("a ')' has no '(' before it".to_owned());
                }
                if !after_term {
                    return Err("give a word before ')'".to_owned());
                }
                depth -= 1;
                out.push(Token::Close);
                after_term = true;
            }
        }
    }
    if out.is_empty() {
        return Err("give at least one word to search for".to_owned());
    }
    if !after_term {
        let last = match out.last() {
            Some(Token::Or) => "OR",
            Some(Token::Not) => "NOT",
            Some(Token::And) => "AND",
            _ => "the query",
        };
        return Err(format!("{last} needs a word after it"));
    }
    if depth > 0 {
        return Err("a '(' is not closed".to_owned());
    }
    Ok(out)
}
