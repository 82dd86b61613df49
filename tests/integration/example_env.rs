//! `usermgmt.example.env` lists exactly the settings of `usermgmt serve
//! --help`, each with the default that --help shows.

use std::collections::BTreeMap;
use std::process::Command;

/// Variable → default (empty where there is none), from `serve --help`.
fn help_settings() -> BTreeMap<String, String> {
    let output = Command::new(env!("CARGO_BIN_EXE_usermgmt"))
        .args(["serve", "--help"])
        // Set variables would show up in --help as `[env: NAME=value]`.
        .env_clear()
        .output()
        .expect("run usermgmt serve --help");
    assert!(output.status.success(), "{output:?}");
    let help = String::from_utf8(output.stdout).expect("utf-8 help");
    let mut settings = BTreeMap::new();
    for line in help.lines() {
        let Some((_, env)) = line.split_once("[env: ") else {
            continue;
        };
        let name: String = env
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        let default = line
            .split_once("[default: ")
            .and_then(|(_, rest)| rest.split_once(']'))
            .map(|(default, _)| default.to_owned())
            .unwrap_or_default();
        settings.insert(name, default);
    }
    settings
}

/// Variable → value, from the example's `# NAME=value` lines.
fn example_settings() -> BTreeMap<String, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/usermgmt.example.env");
    let text = std::fs::read_to_string(path).expect("read usermgmt.example.env");
    let mut settings = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim_start_matches('#').trim();
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        if !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            let previous = settings.insert(name.to_owned(), value.to_owned());
            assert!(previous.is_none(), "{name} is listed twice");
        }
    }
    settings
}

#[test]
fn the_example_env_file_lists_every_serve_setting_with_its_default() {
    let help = help_settings();
    let example = example_settings();
    assert!(
        help.len() > 10,
        "too few settings parsed from --help: {help:?}"
    );
    let help_names: Vec<_> = help.keys().collect();
    let example_names: Vec<_> = example.keys().collect();
    assert_eq!(
        help_names, example_names,
        "usermgmt.example.env must list exactly the variables of `usermgmt serve --help`"
    );
    for (name, default) in &help {
        if !default.is_empty() {
            assert_eq!(
                &example[name], default,
                "usermgmt.example.env must show {name}'s default"
            );
        }
    }
}
