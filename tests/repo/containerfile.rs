//! A small reader of Containerfiles (Dockerfile syntax): the global ARGs, the
//! stages and their instructions, enough to check what an image is built from
//! and what its final stage does without a container engine.

/// One instruction: its keyword (upper-case) and its arguments, with line
/// continuations joined.
#[derive(Debug, Clone)]
pub struct Instruction {
    pub keyword: String,
    pub args: String,
}

/// One `FROM` and the instructions up to the next.
#[derive(Debug, Clone)]
pub struct Stage {
    /// The base as written (`${RUST_IMAGE}`, `sources`, `scratch`, ...).
    pub base: String,
    /// Flags of the FROM line (`--platform=$BUILDPLATFORM`).
    pub flags: Vec<String>,
    /// The name after `AS`.
    pub name: Option<String>,
    pub instructions: Vec<Instruction>,
}

impl Stage {
    /// The arguments of every instruction with this keyword.
    pub fn all<'a>(&'a self, keyword: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.instructions
            .iter()
            .filter(move |i| i.keyword == keyword)
            .map(|i| i.args.as_str())
    }
}

/// A parsed Containerfile.
#[derive(Debug, Clone)]
pub struct Containerfile {
    /// ARGs before the first FROM, with their defaults (empty when none).
    pub args: Vec<(String, String)>,
    pub stages: Vec<Stage>,
}

impl Containerfile {
    pub fn parse(text: &str) -> Self {
        let mut args = Vec::new();
        let mut stages: Vec<Stage> = Vec::new();
        for line in logical_lines(text) {
            let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
            let keyword = keyword.to_ascii_uppercase();
            let rest = rest.trim().to_string();
            if keyword == "FROM" {
                stages.push(parse_from(&rest));
            } else if let Some(stage) = stages.last_mut() {
                stage.instructions.push(Instruction {
                    keyword,
                    args: rest,
                });
            } else if keyword == "ARG" {
                for word in rest.split_whitespace() {
                    let (name, default) = word.split_once('=').unwrap_or((word, ""));
                    args.push((name.to_string(), default.trim_matches('"').to_string()));
                }
            }
        }
        Self { args, stages }
    }

    /// The default of a global ARG.
    pub fn arg(&self, name: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `text` with `${NAME}` and `$NAME` of the global ARGs replaced by
    /// their defaults.
    pub fn resolve(&self, text: &str) -> String {
        let mut resolved = text.to_string();
        for (name, value) in &self.args {
            resolved = resolved
                .replace(&format!("${{{name}}}"), value)
                .replace(&format!("${name}"), value);
        }
        resolved
    }

    /// The stage named `name`.
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name.as_deref() == Some(name))
    }

    /// The stage the image is made of.
    #[track_caller]
    pub fn final_stage(&self) -> &Stage {
        self.stages.last().expect("the Containerfile has a FROM")
    }
}

/// `[--flag ...] image [AS name]`.
fn parse_from(rest: &str) -> Stage {
    let words: Vec<&str> = rest.split_whitespace().collect();
    let flags: Vec<String> = words
        .iter()
        .take_while(|w| w.starts_with("--"))
        .map(|w| w.to_string())
        .collect();
    let rest = &words[flags.len()..];
    let base = rest.first().map(|w| w.to_string()).unwrap_or_default();
    let name = match rest {
        [_, as_, name, ..] if as_.eq_ignore_ascii_case("AS") => Some(name.to_string()),
        _ => None,
    };
    Stage {
        base,
        flags,
        name,
        instructions: Vec::new(),
    }
}

/// Instructions, one per item: comment and blank lines dropped (also inside
/// a continuation, as Docker does), `\` continuations joined.
fn logical_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(continued) => {
                current.push_str(continued.trim());
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.trim().is_empty() {
        lines.push(current);
    }
    lines
}

#[test]
fn the_reader_joins_continuations_and_reads_stages() {
    let file = Containerfile::parse(
        "# syntax=docker/dockerfile:1.7\nARG BASE=img:1@sha256:ab\nFROM --platform=$BUILDPLATFORM ${BASE} AS build\nRUN a \\\n  # a comment\n  && b\nFROM scratch\nCOPY --from=build /x /y\n",
    );
    assert_eq!(file.arg("BASE"), Some("img:1@sha256:ab"));
    assert_eq!(file.stages.len(), 2);
    let build = file.stage("build").unwrap();
    assert_eq!(build.flags, ["--platform=$BUILDPLATFORM"]);
    assert_eq!(file.resolve(&build.base), "img:1@sha256:ab");
    assert_eq!(build.all("RUN").collect::<Vec<_>>(), ["a && b"]);
    assert_eq!(file.final_stage().base, "scratch");
    assert_eq!(file.final_stage().name, None);
}
