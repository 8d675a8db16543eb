//! Every `wharf …` command shown in a shell block of README.md or docs/*.md
//! is parsed by the CLI's own clap command tree (issue 22), so a renamed
//! flag or subcommand fails here with the file and line that still shows it.
//!
//! A shell block is a fenced block tagged `sh`, `bash`, `shell` or `console`;
//! in other fenced blocks (transcripts), lines after a `$ ` prompt count too.
//! A command is a line (joined over trailing `\`) whose first word is `wharf`
//! or a path ending in `/wharf`, after an optional `$ ` prompt. A `# comment`
//! ends it. An optional group written `[--flag VALUE]` is left out of the
//! parse, and its flag must exist on the parsed subcommand.

use std::path::{Path, PathBuf};

/// One command line found in a doc.
struct DocCommand {
    file: PathBuf,
    line: usize,
    text: String,
}

/// The docs whose shell blocks are checked.
fn doc_files() -> Vec<PathBuf> {
    let root = wharf_tests::root();
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

fn is_shell_fence(line: &str) -> bool {
    let tag = line.trim_start_matches('`').trim();
    matches!(tag, "sh" | "bash" | "shell" | "console")
}

/// The lines of the file's shell blocks, continuation lines joined, with
/// the 1-based number of each logical line's first line.
fn shell_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    // Inside a fence: whether it is a shell block.
    let mut fence: Option<bool> = None;
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fence = match fence {
                Some(_) => None,
                None => Some(is_shell_fence(line.trim_start())),
            };
            continue;
        }
        // Other blocks (`text` transcripts) count only their `$ ` prompts.
        let prompt = line.trim_start().starts_with("$ ");
        if fence != Some(true) && !(fence == Some(false) && (prompt || pending.is_some())) {
            continue;
        }
        let (start, mut joined) = pending.take().unwrap_or((i + 1, String::new()));
        match line.strip_suffix('\\') {
            Some(head) => {
                joined.push_str(head);
                joined.push(' ');
                pending = Some((start, joined));
            }
            None => {
                joined.push_str(line);
                out.push((start, joined));
            }
        }
    }
    out
}

/// Every `wharf …` command in the doc file.
fn doc_commands(file: &Path) -> Vec<DocCommand> {
    let text = std::fs::read_to_string(file).expect("read doc");
    shell_lines(&text)
        .into_iter()
        .filter_map(|(line, raw)| {
            let cmd = raw.trim().trim_start_matches("$ ");
            let first = cmd.split_whitespace().next()?;
            (first == "wharf" || first.ends_with("/wharf")).then(|| DocCommand {
                file: file.to_path_buf(),
                line,
                text: cmd.to_string(),
            })
        })
        .collect()
}

/// Shell words of a command line: quotes removed, `# comment` dropped.
/// Enough shell for docs; an unterminated quote is an error.
fn shell_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '#' if word.is_none() => break,
            c if c.is_whitespace() => words.extend(word.take()),
            '\'' | '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some(other) => w.push(other),
                        None => return Err(format!("unterminated {c}")),
                    }
                }
            }
            other => word.get_or_insert_with(String::new).push(other),
        }
    }
    words.extend(word);
    Ok(words)
}

/// The words outside `[…]` groups, and the flags named inside them.
fn split_optional(words: Vec<String>) -> (Vec<String>, Vec<String>) {
    let mut required = Vec::new();
    let mut optional_flags = Vec::new();
    let mut depth = 0usize;
    for word in words {
        let opens = word.starts_with('[');
        if opens {
            depth += 1;
        }
        let bare = word.trim_start_matches('[').trim_end_matches(']');
        if depth > 0 && bare.starts_with("--") {
            optional_flags.push(bare.to_string());
        }
        let closes = word.matches(']').count();
        if depth == 0 {
            required.push(word);
        } else {
            depth -= closes.min(depth);
        }
    }
    (required, optional_flags)
}

/// The subcommand `args` (program name first) selects.
fn leaf<'a>(cmd: &'a clap::Command, args: &[String]) -> &'a clap::Command {
    let mut current = cmd;
    for arg in args.iter().skip(1) {
        match current.find_subcommand(arg) {
            Some(sub) => current = sub,
            None if arg.starts_with('-') => continue,
            None => break,
        }
    }
    current
}

/// Why the CLI refuses this command, or `None` when it parses.
fn check(cmd: &clap::Command, doc: &DocCommand) -> Option<String> {
    let words = match shell_words(&doc.text) {
        Ok(words) => words,
        Err(e) => return Some(format!("cannot split: {e}")),
    };
    let (required, optional_flags) = split_optional(words);
    if let Err(e) = cmd.clone().try_get_matches_from(&required) {
        return Some(e.render().to_string().lines().next().unwrap_or_default().to_string());
    }
    let sub = leaf(cmd, &required);
    optional_flags
        .iter()
        .find(|flag| !sub.get_arguments().any(|a| a.get_long() == Some(flag.trim_start_matches("--"))))
        .map(|flag| format!("no option {flag} on `{}`", sub.get_name()))
}

#[test]
fn every_wharf_command_in_the_docs_parses() {
    let mut cmd = wharf::cli::command();
    cmd.build();
    let commands: Vec<DocCommand> = doc_files().iter().flat_map(|f| doc_commands(f)).collect();
    // The README's quick start alone shows two; the docs more.
    assert!(commands.len() >= 8, "found only {} wharf commands in the docs", commands.len());
    let root = wharf_tests::root();
    let failures: Vec<String> = commands
        .iter()
        .filter_map(|doc| {
            let why = check(&cmd, doc)?;
            let file = doc.file.strip_prefix(&root).unwrap_or(&doc.file).display();
            Some(format!("{file}:{}: `{}`: {why}", doc.line, doc.text))
        })
        .collect();
    assert!(failures.is_empty(), "commands the CLI no longer accepts:\n{}", failures.join("\n"));
}

#[test]
fn the_checker_catches_an_unknown_flag_and_a_missing_optional_flag() {
    let mut cmd = wharf::cli::command();
    cmd.build();
    let doc = |text: &str| DocCommand { file: PathBuf::from("x.md"), line: 1, text: text.to_string() };
    assert!(check(&cmd, &doc("wharf status --no-such-flag")).is_some());
    assert!(check(&cmd, &doc("wharf no-such-command")).is_some());
    assert!(check(&cmd, &doc("wharf replica resume orders [--no-such P]")).is_some());
    assert!(check(&cmd, &doc("wharf status # a comment --bogus")).is_none());
}

#[test]
fn shell_blocks_join_continuations_and_skip_other_blocks() {
    let text = "```text\nwharf bogus\n$ wharf status\n```\nwharf prose\n```sh\nwharf dlq list \\\n  orders --json\n```\n";
    let lines = shell_lines(text);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0], (3, "$ wharf status".to_string()));
    assert_eq!(lines[1].0, 7);
    assert_eq!(shell_words(&lines[1].1).expect("words"), ["wharf", "dlq", "list", "orders", "--json"]);
}
