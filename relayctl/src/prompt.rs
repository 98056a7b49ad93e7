//! Interactive questions (dialoguer), asked only when both stdin and stderr are terminals.
//! dialoguer draws on stderr, so stdout stays clean for results.

use std::io::{self, IsTerminal};

use dialoguer::{Confirm, Input, Password, Select};

/// Whether a person can be asked: stdin to read answers, stderr to draw prompts.
pub fn interactive() -> bool {
    io::stdin().is_terminal() && io::stderr().is_terminal()
}

/// A line of text, re-asked until `validate` accepts it; `default` is used on a bare Enter.
pub fn text(
    prompt: &str,
    default: Option<String>,
    allow_empty: bool,
    validate: impl Fn(&str) -> Result<(), String>,
) -> io::Result<String> {
    let mut input = Input::<String>::new()
        .with_prompt(prompt)
        .allow_empty(allow_empty)
        .validate_with(|value: &String| validate(value));
    if let Some(default) = default {
        input = input.default(default);
    }
    input.interact_text().map_err(into_io)
}

/// A hidden answer (API keys); empty means "none".
pub fn secret(prompt: &str) -> io::Result<Option<String>> {
    let value = Password::new()
        .with_prompt(prompt)
        .allow_empty_password(true)
        .interact()
        .map_err(into_io)?;
    Ok(Some(value).filter(|v| !v.is_empty()))
}

/// One of `items`, chosen with the arrow keys; Enter takes `default` (an index) unmoved.
pub fn select(prompt: &str, items: &[&str], default: usize) -> io::Result<usize> {
    Select::new()
        .with_prompt(prompt)
        .items(items)
        .default(default)
        .interact()
        .map_err(into_io)
}

/// A yes/no question.
pub fn confirm(prompt: &str, default: bool) -> io::Result<bool> {
    Confirm::new()
        .with_prompt(prompt)
        .default(default)
        .interact()
        .map_err(into_io)
}

fn into_io(e: dialoguer::Error) -> io::Error {
    match e {
        dialoguer::Error::IO(e) => e,
    }
}
