//! A recipe's build context as a deterministic tar, for `POST /build`.
//!
//! The docker CLI sends a context with each file's real mtime, owner and the order in which
//! the directory happened to list it, so two checkouts of one commit make different
//! contexts. [`write_context`] makes the same tar from the same tree anywhere:
//!
//! - entries sorted by path, bytewise, directories included (written `dir/`);
//! - mtimes clamped to `SOURCE_DATE_EPOCH`: `min(mtime, sde)`, so a checkout (whose files are
//!   all newer) gives `sde` throughout, while a tree that really is older keeps its times;
//! - uid and gid 0, no user or group names;
//! - the mode's low 12 bits (permissions, setuid, setgid, sticky), nothing else;
//! - symlinks as symlinks, their targets untouched; a file with several hard links is sent
//!   as that many regular files (the daemon does not care, and the tar does not depend on
//!   which name was seen first);
//! - GNU tar headers ([`crate::dtar`]);
//! - `.git` and `out` left out at the top level, and `.dockerignore` honoured as the docker
//!   CLI honours it ([`IgnoreMatcher`]), except that `.dockerignore` and the Dockerfile are
//!   always sent, as the CLI does (the daemon then hides them from `COPY`).
//!
//! Device files, sockets and FIFOs are refused: they cannot be part of a source tree that
//! anyone else can rebuild from.
//!
//! The tar is written to a [`Write`] as it is made, file by file: only the paths are held in
//! memory, never the contents.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::EntryType;
use thiserror::Error;

use crate::dtar::{HashingWriter, Meta, TarWriter};

/// Top-level names never sent: the repository, and eifctl's output directory.
pub const ALWAYS_EXCLUDED: &[&str] = &[".git", "out"];

/// What a context tar holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextSummary {
    /// Entries of every kind (files, directories, symlinks).
    pub entries: u64,
    /// Regular files.
    pub files: u64,
    /// The tar's length.
    pub bytes: u64,
    /// The tar's sha256, hex: what a manifest records as the context.
    pub sha256: String,
}

/// What can go wrong in making a context.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ContextError {
    #[error("reading the build context at {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing the build context tar: {0}")]
    Write(#[source] io::Error),
    #[error(
        "{} is a {kind}: a build context may hold only files, directories and symlinks",
        path.display()
    )]
    SpecialFile { path: PathBuf, kind: &'static str },
    #[error("{}: line {line}: {reason}", path.display())]
    BadPattern {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("the Dockerfile {dockerfile:?} is not a file in the build context {}", dir.display())]
    NoDockerfile { dir: PathBuf, dockerfile: String },
}

/// Writes the context `dir` as a deterministic tar to `out` and says what it holds.
/// `dockerfile` is the Dockerfile's path inside `dir` (e.g. `Dockerfile`); it is sent even if
/// `.dockerignore` excludes it. `sde` is `SOURCE_DATE_EPOCH`.
pub fn write_context<W: Write>(
    dir: &Path,
    dockerfile: &str,
    sde: u64,
    out: W,
) -> Result<ContextSummary, ContextError> {
    let read = |path: &Path| {
        let path = path.to_owned();
        move |source| ContextError::Read { path, source }
    };
    let dockerfile = clean(dockerfile.trim_start_matches('/'));
    let df_path = dir.join(&dockerfile);
    if !fs::symlink_metadata(&df_path)
        .map_err(read(&df_path))?
        .is_file()
    {
        return Err(ContextError::NoDockerfile {
            dir: dir.to_owned(),
            dockerfile,
        });
    }

    let ignore_path = dir.join(".dockerignore");
    let mut patterns = match fs::read(&ignore_path) {
        Ok(text) => read_dockerignore(&text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(read(&ignore_path)(e)),
    };
    let matcher = |patterns: &[(usize, String)]| {
        IgnoreMatcher::new(patterns.iter().map(|(_, p)| p.as_str())).map_err(|(i, reason)| {
            ContextError::BadPattern {
                path: ignore_path.clone(),
                line: patterns[i].0,
                reason,
            }
        })
    };
    // As the CLI's TrimBuildFilesFromExcludes: keep .dockerignore and the Dockerfile.
    let first = matcher(&patterns)?;
    if first.matches(".dockerignore") {
        patterns.push((0, "!.dockerignore".to_owned()));
    }
    if first.matches(&dockerfile) {
        patterns.push((0, format!("!{dockerfile}")));
    }
    let matcher = matcher(&patterns)?;

    let mut paths = Vec::new();
    walk(dir, &mut Vec::new(), &matcher, &mut paths)?;
    paths.sort();

    let mut tar = TarWriter::new(HashingWriter::new(BufWriter::new(out)));
    let mut summary = ContextSummary {
        entries: 0,
        files: 0,
        bytes: 0,
        sha256: String::new(),
    };
    for rel in &paths {
        let path = dir.join(Path::new(std::ffi::OsStr::from_bytes(rel)));
        let meta = fs::symlink_metadata(&path).map_err(read(&path))?;
        let file_type = meta.file_type();
        let mtime = u64::try_from(meta.mtime()).unwrap_or(0).min(sde);
        let base = Meta {
            kind: EntryType::Regular,
            mode: meta.mode() & 0o7777,
            uid: 0,
            gid: 0,
            mtime,
            size: 0,
            link: None,
            device: None,
        };
        let write = ContextError::Write;
        if file_type.is_dir() {
            let mut name = rel.clone();
            name.push(b'/');
            let meta = Meta {
                kind: EntryType::Directory,
                ..base
            };
            tar.append(&name, &meta, io::empty()).map_err(write)?;
        } else if file_type.is_symlink() {
            let target = fs::read_link(&path).map_err(read(&path))?;
            let meta = Meta {
                kind: EntryType::Symlink,
                link: Some(target.as_os_str().as_bytes()),
                ..base
            };
            tar.append(rel, &meta, io::empty()).map_err(write)?;
        } else if file_type.is_file() {
            let file = fs::File::open(&path).map_err(read(&path))?;
            let meta = Meta {
                size: meta.len(),
                ..base
            };
            // A file that changes size while it is read fails here rather than making a
            // tar that does not match its headers.
            tar.append(rel, &meta, file).map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => read(&path)(e),
                _ => write(e),
            })?;
            summary.files += 1;
        } else {
            return Err(special(path, &file_type));
        }
        summary.entries += 1;
    }
    let hashing = tar.finish().map_err(ContextError::Write)?;
    let (buffered, sha256, bytes) = hashing.finish();
    buffered
        .into_inner()
        .map_err(|e| ContextError::Write(e.into_error()))?;
    summary.sha256 = sha256;
    summary.bytes = bytes;
    Ok(summary)
}

/// The sha256 (hex) of the context tar that [`write_context`] would write, without keeping
/// the tar: what a manifest records as the recipe's context.
pub fn context_digest(dir: &Path, dockerfile: &str, sde: u64) -> Result<String, ContextError> {
    Ok(write_context(dir, dockerfile, sde, io::sink())?.sha256)
}

fn special(path: PathBuf, file_type: &fs::FileType) -> ContextError {
    let kind = if file_type.is_block_device() {
        "block device"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_fifo() {
        "FIFO"
    } else {
        "file of unknown type"
    };
    ContextError::SpecialFile { path, kind }
}

/// Collects the paths (relative, `/`-separated bytes) of what is sent under `rel`, walking as
/// the CLI's `archive.TarWithOptions` does: an excluded directory is still entered when an
/// exception (`!pattern`) might match below it; then it is sent only if something in it is.
fn walk(
    root: &Path,
    rel: &mut Vec<u8>,
    matcher: &IgnoreMatcher,
    out: &mut Vec<Vec<u8>>,
) -> Result<bool, ContextError> {
    let dir = root.join(std::ffi::OsStr::from_bytes(rel));
    let read = |path: &Path| {
        let path = path.to_owned();
        move |source| ContextError::Read { path, source }
    };
    let mut sent_any = false;
    for entry in fs::read_dir(&dir).map_err(read(&dir))? {
        let entry = entry.map_err(read(&dir))?;
        let name = entry.file_name();
        let name = name.as_bytes();
        if rel.is_empty() && ALWAYS_EXCLUDED.iter().any(|x| x.as_bytes() == name) {
            continue;
        }
        let len = rel.len();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name);
        let file_type = entry.file_type().map_err(read(&entry.path()))?;
        let path_text = String::from_utf8_lossy(rel).into_owned();
        let excluded = matcher.matches(&path_text);
        if file_type.is_dir() {
            if !excluded {
                out.push(rel.clone());
                walk(root, rel, matcher, out)?;
                sent_any = true;
            } else if matcher.might_include_below(&path_text) && walk(root, rel, matcher, out)? {
                out.push(rel.clone());
                sent_any = true;
            }
        } else if !excluded {
            if !(file_type.is_file() || file_type.is_symlink()) {
                return Err(special(entry.path(), &file_type));
            }
            out.push(rel.clone());
            sent_any = true;
        }
        rel.truncate(len);
    }
    Ok(sent_any)
}

/// The patterns of a `.dockerignore`, each with its line number, as the docker CLI reads them
/// (`dockerignore.ReadAll`): a UTF-8 BOM dropped, lines trimmed, empty lines and `#` comments
/// skipped, each pattern cleaned like Go's `filepath.Clean`, and a leading `/` dropped; a
/// leading `!` marks an exception.
pub fn read_dockerignore(text: &[u8]) -> Vec<(usize, String)> {
    let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
    let text = String::from_utf8_lossy(text);
    let mut patterns = Vec::new();
    // Go's bufio.Scanner splits at \n and drops a \r before it; TrimSpace does the rest.
    for (i, line) in text.split('\n').enumerate() {
        let mut pattern = line.trim();
        if pattern.starts_with('#') || pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = if pattern.is_empty() {
            String::new()
        } else {
            clean(pattern)
        };
        if cleaned.len() > 1 && cleaned.starts_with('/') {
            cleaned.remove(0);
        }
        if invert {
            cleaned.insert(0, '!');
        }
        patterns.push((i + 1, cleaned));
    }
    patterns
}

/// Go's `filepath.Clean` for `/`-separated paths: the shortest equivalent path, lexically.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// Docker's `.dockerignore` matching, as moby's `fileutils.PatternMatcher` (Docker 20.10,
/// which the CLI uses to build the context): each pattern becomes a regular expression in
/// which `*` is any run of characters but `/`, `?` one character but `/`, `**` any run of
/// path components (`**` at the end: anything), `[...]` a character class and `\` escapes the
/// next character. A path is excluded by the last pattern that matches it or the parent
/// directory with as many components as the pattern has; a pattern starting with `!` makes a
/// match an exception instead.
///
/// Implemented by hand (no crate implements these exact semantics), as a backtracking matcher
/// over the same tokens as moby's regular expression. One difference: other characters that
/// are special in a regular expression (`+ ( ) | { } ^`) are literals here, where moby would
/// give them their regular-expression meaning, which no `.dockerignore` relies on.
#[derive(Debug, Clone)]
pub struct IgnoreMatcher {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    tokens: Vec<Token>,
    /// How many `/`-separated components the pattern has.
    dirs: usize,
    exclusion: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(char),
    /// `*`: `[^/]*`
    Star,
    /// `?`: `[^/]`
    Any,
    /// `**` at the end: `.*`
    AnythingToEnd,
    /// `**` (and `**/`) elsewhere: `(.*/)?`
    Components,
    /// `[...]`, negated or not; ranges inclusive.
    Class(bool, Vec<(char, char)>),
}

impl IgnoreMatcher {
    /// Compiles patterns (as [`read_dockerignore`] gives them); an error names the index of
    /// the bad pattern and what is wrong with it.
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Self, (usize, String)> {
        let mut compiled = Vec::new();
        for (i, pattern) in patterns.into_iter().enumerate() {
            let mut p = pattern.trim();
            if p.is_empty() {
                continue;
            }
            let cleaned = clean(p);
            p = &cleaned;
            let exclusion = p.starts_with('!');
            if exclusion {
                p = &p[1..];
                if p.is_empty() {
                    return Err((i, "illegal exclusion pattern: \"!\"".to_owned()));
                }
            }
            let tokens = tokenize(p).map_err(|reason| (i, reason))?;
            compiled.push(Pattern {
                text: p.to_owned(),
                tokens,
                dirs: p.split('/').count(),
                exclusion,
            });
        }
        Ok(Self { patterns: compiled })
    }

    /// Whether `path` (relative to the context, `/`-separated) is excluded.
    pub fn matches(&self, path: &str) -> bool {
        let chars: Vec<char> = path.chars().collect();
        let parent: Vec<&str> = match path.rfind('/') {
            Some(i) => path[..i].split('/').collect(),
            None => Vec::new(),
        };
        let mut matched = false;
        for pattern in &self.patterns {
            let mut hit = match_tokens(&pattern.tokens, &chars);
            if !hit && !parent.is_empty() && pattern.dirs <= parent.len() {
                let prefix: Vec<char> = parent[..pattern.dirs].join("/").chars().collect();
                hit = match_tokens(&pattern.tokens, &prefix);
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        matched
    }

    /// Whether an exception might match something below the excluded directory `dir`, so that
    /// it must be entered: the CLI's test, an exception whose text starts with `dir/`.
    pub fn might_include_below(&self, dir: &str) -> bool {
        let dir_slash = format!("{dir}/");
        self.patterns
            .iter()
            .any(|p| p.exclusion && format!("{}/", p.text).starts_with(&dir_slash))
    }
}

fn tokenize(pattern: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                tokens.push(if i == chars.len() {
                    Token::AnythingToEnd
                } else {
                    Token::Components
                });
            }
            '*' => tokens.push(Token::Star),
            '?' => tokens.push(Token::Any),
            '\\' => match chars.get(i) {
                Some(&next) => {
                    i += 1;
                    tokens.push(Token::Literal(next));
                }
                // Go's filepath.Match, which validates every pattern, refuses this.
                None => return Err(format!("bad pattern {pattern:?}: it ends in \\")),
            },
            '[' => {
                let negated = chars.get(i) == Some(&'^');
                if negated {
                    i += 1;
                }
                let mut ranges = Vec::new();
                loop {
                    let Some(&lo) = chars.get(i) else {
                        return Err(format!("bad pattern {pattern:?}: unclosed ["));
                    };
                    i += 1;
                    if lo == ']' && !ranges.is_empty() {
                        break;
                    }
                    let lo = if lo == '\\' {
                        let escaped = *chars
                            .get(i)
                            .ok_or_else(|| format!("bad pattern {pattern:?}: unclosed ["))?;
                        i += 1;
                        escaped
                    } else {
                        lo
                    };
                    let mut hi = lo;
                    if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|c| *c != ']') {
                        hi = chars[i + 1];
                        i += 2;
                        if hi == '\\' {
                            hi = *chars
                                .get(i)
                                .ok_or_else(|| format!("bad pattern {pattern:?}: unclosed ["))?;
                            i += 1;
                        }
                        if hi < lo {
                            return Err(format!("bad pattern {pattern:?}: range {lo}-{hi}"));
                        }
                    }
                    ranges.push((lo, hi));
                }
                tokens.push(Token::Class(negated, ranges));
            }
            other => tokens.push(Token::Literal(other)),
        }
    }
    Ok(tokens)
}

/// Whether the tokens match the whole of `text`.
fn match_tokens(tokens: &[Token], text: &[char]) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return text.is_empty();
    };
    match first {
        Token::Literal(c) => text.first() == Some(c) && match_tokens(rest, &text[1..]),
        Token::Any => text.first().is_some_and(|c| *c != '/') && match_tokens(rest, &text[1..]),
        Token::Class(negated, ranges) => {
            text.first()
                .is_some_and(|c| ranges.iter().any(|(lo, hi)| (lo..=hi).contains(&c)) != *negated)
                && match_tokens(rest, &text[1..])
        }
        Token::Star => {
            for n in 0..=text.len() {
                if match_tokens(rest, &text[n..]) {
                    return true;
                }
                if text.get(n).is_none_or(|c| *c == '/') {
                    break;
                }
            }
            false
        }
        // Go's `.` does not match a newline.
        Token::AnythingToEnd => !text.contains(&'\n') && rest.is_empty(),
        Token::Components => {
            if match_tokens(rest, text) {
                return true;
            }
            (0..text.len()).any(|i| {
                text[i] == '/' && !text[..i].contains(&'\n') && match_tokens(rest, &text[i + 1..])
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excluded(patterns: &[&str], path: &str) -> bool {
        IgnoreMatcher::new(patterns.iter().copied())
            .unwrap()
            .matches(path)
    }

    #[test]
    fn clean_is_gos() {
        for (input, want) in [
            ("", "."),
            ("a/b/../c", "a/c"),
            ("./a//b/", "a/b"),
            ("/../a", "/a"),
            ("../a", "../a"),
            ("a/..", "."),
            ("/", "/"),
        ] {
            assert_eq!(clean(input), want, "{input}");
        }
    }

    // Cases in the manner of moby's fileutils TestMatches: one pattern, one path.
    #[test]
    fn patterns_match_as_in_moby() {
        let cases: &[(&str, &str, bool)] = &[
            ("**", "file", true),
            ("**", "file/", true),
            ("**/", "file", true),
            ("**/", "file/", true),
            ("**", "/", true),
            ("**/", "/", true),
            ("**", "dir/file", true),
            ("**/", "dir/file", true),
            ("**", "dir/file/", true),
            ("**/", "dir/file/", true),
            ("**/**", "dir/file", true),
            ("**/**", "dir/file/", true),
            ("dir/**", "dir/file", true),
            ("dir/**", "dir/file/", true),
            ("dir/**", "dir/dir2/file", true),
            ("dir/**", "dir/dir2/file/", true),
            ("**/dir2/*", "dir/dir2/file", true),
            ("**/dir2/*", "dir/dir2/file/", true),
            ("**/dir2/**", "dir/dir2/dir3/file", true),
            ("**/dir2/**", "dir/dir2/dir3/file/", true),
            ("**file", "file", true),
            ("**file", "dir/file", true),
            ("**/file", "dir/file", true),
            ("**file", "dir/dir/file", true),
            ("**/file", "dir/dir/file", true),
            ("**/file*", "dir/dir/file", true),
            ("**/file*", "dir/dir/file.txt", true),
            ("**/file*txt", "dir/dir/file.txt", true),
            ("**/file*.txt", "dir/dir/file.txt", true),
            ("**/file*.txt*", "dir/dir/file.txt", true),
            ("**/**/*.txt", "dir/dir/file.txt", true),
            ("**/**/*.txt2", "dir/dir/file.txt", false),
            ("**/*.txt", "file.txt", true),
            ("**/**/*.txt", "file.txt", true),
            ("a**/*.txt", "a/file.txt", true),
            ("a**/*.txt", "a/dir/file.txt", true),
            ("a**/*.txt", "a/dir/dir/file.txt", true),
            ("a/*.txt", "a/dir/file.txt", false),
            ("a/*.txt", "a/file.txt", true),
            ("a/*.txt**", "a/file.txt", true),
            ("a[b-d]e", "ae", false),
            ("a[b-d]e", "ace", true),
            ("a[b-d]e", "aae", false),
            ("a[^b-d]e", "aze", true),
            (".*", ".foo", true),
            (".*", "foo", false),
            ("abc.def", "abcdef", false),
            ("abc.def", "abc.def", true),
            ("abc.def", "abcZdef", false),
            ("abc?def", "abcZdef", true),
            ("abc?def", "abcdef", false),
            ("a\\\\", "a\\", true),
            ("**/foo/bar", "foo/bar", true),
            ("**/foo/bar", "dir/foo/bar", true),
            ("**/foo/bar", "dir/dir2/foo/bar", true),
            ("abc/**", "abc", false),
            ("abc/**", "abc/def", true),
            ("abc/**", "abc/def/ghi", true),
            ("**/.foo", ".foo", true),
            ("**/.foo", "bar.foo", false),
        ];
        for (pattern, path, want) in cases {
            assert_eq!(excluded(&[pattern], path), *want, "{pattern} vs {path}");
        }
    }

    #[test]
    fn later_patterns_win_and_parents_count() {
        assert!(excluded(&["docs"], "docs/a/b.md"));
        assert!(excluded(&["*.md"], "README.md"));
        assert!(!excluded(&["*.md"], "docs/README.md"));
        assert!(excluded(&["**/*.md"], "docs/README.md"));
        assert!(!excluded(&["*.md", "!README.md"], "README.md"));
        assert!(excluded(&["*.md", "!README.md", "README*"], "README.md"));
        assert!(!excluded(&["docs", "!docs/keep"], "docs/keep"));
        assert!(!excluded(&["docs", "!docs/keep"], "docs/keep/inner"));
        assert!(excluded(&["docs", "!docs/keep"], "docs/other"));
        // The parent with as many components as the pattern: `*` has one.
        assert!(excluded(&["*"], "a/b/c"));
        assert!(!excluded(&["a/*/d"], "a/b/c"));
        assert!(excluded(&["a/*"], "a/b/c"));
    }

    #[test]
    fn dockerignore_lines_are_read_as_the_cli_reads_them() {
        let text = b"\xEF\xBB\xBF# comment\n\n  /abs/path/ \r\n!  keep/../kept\n./x//y\n!\n";
        let patterns: Vec<String> = read_dockerignore(text)
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        assert_eq!(patterns, ["abs/path", "!kept", "x/y", "!"]);
        let err = IgnoreMatcher::new(patterns.iter().map(String::as_str)).unwrap_err();
        assert_eq!(err.0, 3);
        assert!(IgnoreMatcher::new(["a["]).is_err());
        assert!(IgnoreMatcher::new(["a\\"]).is_err());
    }
}
