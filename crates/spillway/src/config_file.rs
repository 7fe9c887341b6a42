//! Reads the command line, then the config file it names, into one [`Cli`]. The file adds
//! nothing of its own: each key is an option's long name, and its value is handed to clap
//! as if typed on the command line, after the flags, for exactly the options neither a flag
//! nor the environment set (clap records each value's source). So each option's parser,
//! range and default exist once, in `cli`.

use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};

use crate::cli::Cli;
use crate::settings::{bad, SettingsError};

/// Options that are not config file keys: the file itself, and clap's own.
const NOT_FILE_KEYS: &[&str] = &["config", "help", "version"];

/// Parses the command line, then the config file it names (if any), into one [`Cli`].
pub fn parse(argv: Vec<OsString>) -> Result<Cli, SettingsError> {
    let matches = Cli::command().try_get_matches_from(&argv)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let Some(path) = cli.serve.config.clone().filter(|_| cli.command.is_none()) else {
        return Ok(cli);
    };
    let (mut extra, app) = file_args(&path, &matches)?;
    if extra.is_empty() && app.is_none() {
        return Ok(cli);
    }
    let mut argv = argv;
    argv.append(&mut extra);
    argv.extend(app);
    let matches = Cli::command().try_get_matches_from(&argv)?;
    Ok(Cli::from_arg_matches(&matches)?)
}

/// The config file's values as command-line arguments, for the options that neither a
/// flag nor the environment set; and APP, if the file names it and nothing else did.
fn file_args(
    path: &Path,
    matches: &ArgMatches,
) -> Result<(Vec<OsString>, Option<OsString>), SettingsError> {
    let shown = path.display().to_string();
    let file_err = |msg: String| SettingsError::File {
        path: shown.clone(),
        msg,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| file_err(e.message().replace('\n', " ")))?;
    let cmd = Cli::command();
    let keys: Vec<&clap::Arg> = cmd
        .get_arguments()
        .filter(|a| {
            a.get_id() == "app" || a.get_long().is_some_and(|l| !NOT_FILE_KEYS.contains(&l))
        })
        .collect();
    let mut args = Vec::new();
    let mut app = None;
    for (raw_key, value) in table {
        let key = raw_key.replace('_', "-");
        let Some(arg) = keys.iter().find(|a| a.get_long().unwrap_or("app") == key) else {
            let allowed: Vec<&str> = keys.iter().map(|a| a.get_long().unwrap_or("app")).collect();
            return Err(file_err(format!(
                "unknown key '{raw_key}' (allowed: {})",
                allowed.join(", ").replace('-', "_")
            )));
        };
        let ctx = format!("{shown}: {}", key.replace('-', "_"));
        let values = toml_values(&ctx, &key, value)?;
        for v in &values {
            check_value(arg, &ctx, v)?;
        }
        let id = arg.get_id().as_str();
        if matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        if id == "app" {
            app = values.into_iter().next().map(OsString::from);
        } else if matches!(arg.get_action(), ArgAction::SetTrue) {
            if values.iter().any(|v| v == "true") {
                args.push(OsString::from(format!("--{key}")));
            }
        } else {
            args.extend(
                values
                    .into_iter()
                    .map(|v| OsString::from(format!("--{key}={v}"))),
            );
        }
    }
    Ok((args, app))
}

/// A TOML value as the strings a flag would take: one per list element, `KEY=VALUE` for
/// the `env` table.
fn toml_values(ctx: &str, key: &str, v: toml::Value) -> Result<Vec<String>, SettingsError> {
    let one = |v: toml::Value| match v {
        toml::Value::String(s) => Ok(s),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(bad(
            ctx,
            format!("expected a string or a number, got {}", other.type_str()),
        )),
    };
    match v {
        toml::Value::Array(a) => a.into_iter().map(one).collect(),
        toml::Value::Table(t) if key == "env" => t
            .into_iter()
            .map(|(k, v)| match v {
                toml::Value::String(s) => Ok(format!("{k}={s}")),
                other => Err(bad(
                    ctx,
                    format!("value of {k} must be a string, got {}", other.type_str()),
                )),
            })
            .collect(),
        other => Ok(vec![one(other)?]),
    }
}

/// Runs the option's own parser on a value from the file, so the error names the file
/// and the key rather than a flag the user never typed.
fn check_value(arg: &clap::Arg, ctx: &str, v: &str) -> Result<(), SettingsError> {
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        return match v {
            "true" | "false" => Ok(()),
            _ => Err(bad(ctx, format!("expected true or false, got {v:?}"))),
        };
    }
    // The option alone, with its own parser, on a command line of one value.
    let alone = clap::Command::new("spillway")
        .no_binary_name(true)
        .arg(arg.clone().env(None::<&str>).default_value(None::<&str>));
    let value: Vec<OsString> = match arg.get_long() {
        Some(long) => vec![format!("--{long}").into(), v.into()],
        None => vec![v.into()],
    };
    alone
        .try_get_matches_from(value)
        .map(|_| ())
        .map_err(|e| bad(ctx, first_line(&e)))
}

/// The first line of a clap error, without its `error:` prefix.
/// With the allowed values, when clap lists them on a line of their own.
pub fn first_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let first = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ");
    match rendered
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("[possible values:"))
    {
        Some(allowed) => format!("{first} {allowed}"),
        None => first.to_owned(),
    }
}
