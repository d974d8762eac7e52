//! Loading the configuration in layers: built-in defaults → TOML file (`--config`,
//! `DASHD_CONFIG`) → `DASHD_*` environment variables → command-line flags. Unknown keys
//! are errors that name the key and where it came from; secrets may come from files
//! (`<key>_file`). The schema itself lives in `dash_core::config`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dash_core::config::{Config, ConfigError, SECRET_KEYS, Secret};
use toml::{Table, Value};

/// Environment variables with the `DASHD_` prefix that are not configuration keys.
const NOT_CONFIG_VARS: &[&str] = &["DASHD_CONFIG"];
/// Prefix of variables reserved for the test suites.
const TEST_VAR_PREFIX: &str = "DASHD_TEST_";

/// A configuration value given as a command-line flag.
#[derive(Debug, Clone)]
pub struct Flag {
    /// Dotted key, e.g. `server.listen`.
    pub key: &'static str,
    /// The flag as typed, for error messages, e.g. `--listen`.
    pub flag: &'static str,
    pub value: String,
}

/// The loaded configuration and the layers it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// Human-readable description of each layer used, in order.
    pub layers: Vec<String>,
    /// Things worth telling the operator, logged once logging is set up.
    pub warnings: Vec<String>,
}

/// Loads the configuration from the given layers. `env` is the process environment (a
/// parameter so tests can pass their own).
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: &[Flag],
) -> Result<Loaded, ConfigError> {
    let defaults = Table::try_from(Config::default()).map_err(|err| ConfigError {
        key: "(defaults)".into(),
        message: err.to_string(),
    })?;
    let mut layers = vec!["built-in defaults".to_owned()];
    let mut origins: BTreeMap<String, String> = BTreeMap::new();
    let mut table = Table::new();

    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
            key: "config file".into(),
            message: format!("cannot read {}: {err}", path.display()),
        })?;
        table = text
            .parse::<Table>()
            .map_err(|err| syntax_error(path, &text, &err))?;
        record_origins(
            &table,
            "",
            &format!("file {}", path.display()),
            &mut origins,
        );
        layers.push(format!("file {}", path.display()));
    }

    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| {
            name.starts_with("DASHD_")
                && !NOT_CONFIG_VARS.contains(&name.as_str())
                && !name.starts_with(TEST_VAR_PREFIX)
        })
        .collect();
    env.sort();
    for (name, raw) in &env {
        let origin = format!("environment variable {name}");
        let path = env_key_path(&name["DASHD_".len()..], &defaults);
        set(
            &mut table,
            &path,
            typed(&defaults, &path, raw, &origin)?,
            &origin,
        )?;
        origins.insert(path.join("."), origin);
    }
    if !env.is_empty() {
        let names: Vec<&str> = env.iter().map(|(name, _)| name.as_str()).collect();
        layers.push(format!("environment ({})", names.join(", ")));
    }

    for flag in flags {
        let origin = format!("flag {}", flag.flag);
        let path: Vec<String> = flag.key.split('.').map(str::to_owned).collect();
        set(
            &mut table,
            &path,
            typed(&defaults, &path, &flag.value, &origin)?,
            &origin,
        )?;
        origins.insert(flag.key.to_owned(), origin);
    }
    if !flags.is_empty() {
        let names: Vec<&str> = flags.iter().map(|flag| flag.flag).collect();
        layers.push(format!("flags ({})", names.join(", ")));
    }

    let warnings = resolve_secret_files(&mut table, &origins)?;

    let config: Config = serde_path_to_error::deserialize(Value::Table(table)).map_err(|err| {
        let mut key = err.path().to_string();
        // The deserializer appends "in `table`" on a second line; the key says it.
        let inner = err.inner().to_string();
        let message = inner.lines().next().unwrap_or_default().to_owned();
        // Unknown keys: the path may stop at the table; the message names the key.
        if let Some(unknown) = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
            && !key.ends_with(unknown)
        {
            key = if key == "." {
                unknown.to_owned()
            } else {
                format!("{key}.{unknown}")
            };
        }
        let message = match origins.get(&key) {
            Some(origin) => format!("{message} (set by {origin})"),
            None => message,
        };
        ConfigError { key, message }
    })?;
    config
        .validate()
        .map_err(|err| match origins.get(&err.key) {
            Some(origin) => ConfigError {
                message: format!("{} (set by {origin})", err.message),
                ..err
            },
            None => err,
        })?;
    crate::telemetry::parse_filter(&config.log.level).map_err(|err| ConfigError {
        key: "log.level".into(),
        message: format!("{err:#}"),
    })?;
    Ok(Loaded {
        config,
        layers,
        warnings,
    })
}

/// A TOML syntax error as line, column and message. The offending line is not quoted:
/// it may hold a secret.
fn syntax_error(path: &Path, text: &str, err: &toml::de::Error) -> ConfigError {
    let location = err.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("line {line}, column {column}: ")
    });
    ConfigError {
        key: path.display().to_string(),
        message: format!("{}{}", location.unwrap_or_default(), err.message().trim()),
    }
}

/// `DATABASE_MAX_CONNECTIONS` → `["database", "max_connections"]`: the longest known
/// section prefix wins, anything else is a top-level key.
fn env_key_path(rest: &str, defaults: &Table) -> Vec<String> {
    let lower = rest.to_ascii_lowercase();
    for (section, value) in defaults {
        if value.is_table()
            && let Some(key) = lower.strip_prefix(&format!("{section}_"))
        {
            return vec![section.clone(), key.to_owned()];
        }
    }
    vec![lower]
}

/// Converts a string from the environment or a flag to the type the key's default has.
fn typed(defaults: &Table, path: &[String], raw: &str, origin: &str) -> Result<Value, ConfigError> {
    let mut current: Option<&Value> = None;
    let mut table = Some(defaults);
    for part in path {
        current = table.and_then(|t| t.get(part));
        table = current.and_then(Value::as_table);
    }
    let invalid = |expected: &str| ConfigError {
        key: path.join("."),
        message: format!("expected {expected}, got {raw:?} (set by {origin})"),
    };
    Ok(match current {
        Some(Value::Integer(_)) => {
            Value::Integer(raw.trim().parse().map_err(|_| invalid("an integer"))?)
        }
        Some(Value::Float(_)) => Value::Float(raw.trim().parse().map_err(|_| invalid("a number"))?),
        Some(Value::Boolean(_)) => Value::Boolean(match raw.trim() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return Err(invalid("true or false")),
        }),
        _ => Value::String(raw.to_owned()),
    })
}

/// Sets `path` in `table`, creating intermediate tables.
fn set(table: &mut Table, path: &[String], value: Value, origin: &str) -> Result<(), ConfigError> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut current = table;
    for part in parents {
        let entry = current
            .entry(part.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        current = entry.as_table_mut().ok_or_else(|| ConfigError {
            key: part.clone(),
            message: format!("is not a table, so {origin} cannot set a key inside it"),
        })?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

fn record_origins(table: &Table, prefix: &str, origin: &str, out: &mut BTreeMap<String, String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Table(inner) => record_origins(inner, &path, origin, out),
            _ => {
                out.insert(path, origin.to_owned());
            }
        }
    }
}

/// Replaces each `<secret>_file` key with the contents of the file it names.
fn resolve_secret_files(
    table: &mut Table,
    origins: &BTreeMap<String, String>,
) -> Result<Vec<String>, ConfigError> {
    let mut warnings = Vec::new();
    for secret in SECRET_KEYS {
        let (section, key) = secret.split_once('.').unwrap_or(("", secret));
        let file_key = format!("{key}_file");
        let scope = if section.is_empty() {
            Some(&mut *table)
        } else {
            table.get_mut(section).and_then(Value::as_table_mut)
        };
        let Some(scope) = scope else { continue };
        let Some(file) = scope.remove(&file_key) else {
            continue;
        };
        let dotted = format!("{secret}_file");
        let origin = origins
            .get(&dotted)
            .map(|o| format!(" (set by {o})"))
            .unwrap_or_default();
        if scope.contains_key(key) {
            return Err(ConfigError {
                key: dotted,
                message: format!("{secret} is also set: give the secret one way only{origin}"),
            });
        }
        let Some(path) = file.as_str().map(PathBuf::from) else {
            return Err(ConfigError {
                key: dotted,
                message: format!("expected a file path{origin}"),
            });
        };
        let contents = std::fs::read_to_string(&path).map_err(|err| ConfigError {
            key: dotted.clone(),
            message: format!("cannot read {}: {err}{origin}", path.display()),
        })?;
        let value = contents.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            return Err(ConfigError {
                key: dotted,
                message: format!("{} is empty{origin}", path.display()),
            });
        }
        scope.insert(key.to_owned(), Value::String(value.to_owned()));
        if let Ok(meta) = std::fs::metadata(&path) {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                warnings.push(format!(
                    "{dotted}: {} is readable by other users; make it 0600 (chmod 600 {})",
                    path.display(),
                    path.display()
                ));
            }
        }
    }
    Ok(warnings)
}

/// The configuration as `dashd check-config` prints it: defaults filled in, secrets
/// redacted, as TOML.
pub fn render_effective(config: &Config) -> String {
    let mut effective = config.clone();
    effective.admin.socket = Some(config.admin_socket());
    effective.database.url = Some(Secret::new(config.database_url()));
    toml::to_string_pretty(&effective).unwrap_or_else(|err| format!("# cannot render: {err}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(contents: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), contents).unwrap();
        file
    }

    #[test]
    fn no_layers_gives_the_defaults() {
        let loaded = load(None, env(&[("PATH", "/bin")]), &[]).unwrap();
        assert_eq!(loaded.config, Config::default());
    }

    #[test]
    fn layers_override_in_order() {
        let f = file(
            "data_dir = \"/srv/a\"\n[server]\nlisten = \"127.0.0.1:1\"\nshutdown_timeout_s = 5\n",
        );
        let loaded = load(
            Some(f.path()),
            env(&[
                ("DASHD_SERVER_LISTEN", "127.0.0.1:2"),
                ("DASHD_DATABASE_MAX_CONNECTIONS", "3"),
                ("DASHD_CONFIG", "ignored"),
                ("DASHD_TEST_DATABASE_URL", "ignored"),
            ]),
            &[Flag {
                key: "server.listen",
                flag: "--listen",
                value: "127.0.0.1:4".into(),
            }],
        )
        .unwrap();
        let c = loaded.config;
        assert_eq!(c.data_dir, PathBuf::from("/srv/a"));
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:4");
        assert_eq!(c.server.shutdown_timeout_s, 5);
        assert_eq!(c.database.max_connections, 3);
        assert_eq!(loaded.layers.len(), 4);
    }

    #[test]
    fn unknown_keys_are_named() {
        let f = file("[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n");
        let err = load(Some(f.path()), env(&[]), &[]).unwrap_err();
        assert_eq!(err.key, "server.listen_port");
        assert!(err.message.contains("file"), "{}", err.message);

        let f = file("colour = true\n");
        assert_eq!(
            load(Some(f.path()), env(&[]), &[]).unwrap_err().key,
            "colour"
        );

        let err = load(None, env(&[("DASHD_DATABSE_URL", "x")]), &[]).unwrap_err();
        assert_eq!(err.key, "databse_url");
        assert!(err.message.contains("DASHD_DATABSE_URL"), "{}", err.message);
    }

    #[test]
    fn malformed_values_are_named() {
        let f = file("[server]\nlisten = \"localhost\"\n");
        let err = load(Some(f.path()), env(&[]), &[]).unwrap_err();
        assert_eq!(err.key, "server.listen");

        let err = load(
            None,
            env(&[("DASHD_SERVER_SHUTDOWN_TIMEOUT_S", "soon")]),
            &[],
        )
        .unwrap_err();
        assert_eq!(err.key, "server.shutdown_timeout_s");
        assert!(err.message.contains("integer"), "{}", err.message);

        let err = load(None, env(&[("DASHD_LOG_FORMAT", "xml")]), &[]).unwrap_err();
        assert_eq!(err.key, "log.format");

        let err = load(None, env(&[("DASHD_LOG_LEVEL", "info,=[")]), &[]).unwrap_err();
        assert_eq!(err.key, "log.level");

        let err = load(None, env(&[("DASHD_DATABASE_URL", "mysql://x")]), &[]).unwrap_err();
        assert_eq!(err.key, "database.url");
        assert!(
            err.message.contains("DASHD_DATABASE_URL"),
            "{}",
            err.message
        );

        let f = file("[server\n");
        assert!(load(Some(f.path()), env(&[]), &[]).is_err());

        // A syntax error never quotes the line: it may hold a password.
        let f = file("[database]\nurl = \"postgres://dash:TopSecret9@db/dashd\n");
        let err = load(Some(f.path()), env(&[]), &[]).unwrap_err();
        assert!(!err.to_string().contains("TopSecret9"), "{err}");
        assert!(err.message.starts_with("line 2, column"), "{err}");
    }

    #[test]
    fn secrets_come_from_files() {
        let secret = file("postgres://dash:pw@db/dashd\n");
        let path = secret.path().display().to_string();
        std::fs::set_permissions(
            secret.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
        let loaded = load(None, env(&[("DASHD_DATABASE_URL_FILE", &path)]), &[]).unwrap();
        assert_eq!(loaded.config.database_url(), "postgres://dash:pw@db/dashd");
        assert!(
            loaded.warnings[0].contains("chmod 600"),
            "{:?}",
            loaded.warnings
        );
        let rendered = render_effective(&loaded.config);
        assert!(!rendered.contains(":pw@"), "{rendered}");
        assert!(
            rendered.contains("postgres://dash:***@db/dashd"),
            "{rendered}"
        );
        assert!(!format!("{:?}", loaded.config).contains(":pw@"));

        let both = load(
            None,
            env(&[
                ("DASHD_DATABASE_URL_FILE", &path),
                ("DASHD_DATABASE_URL", "sqlite://x.db"),
            ]),
            &[],
        )
        .unwrap_err();
        assert_eq!(both.key, "database.url_file");

        let missing = load(
            None,
            env(&[("DASHD_DATABASE_URL_FILE", "/nonexistent/secret")]),
            &[],
        )
        .unwrap_err();
        assert_eq!(missing.key, "database.url_file");
    }

    #[test]
    fn the_example_file_is_the_defaults() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config.example.toml");
        let loaded = load(Some(&example), env(&[]), &[]).unwrap();
        assert_eq!(loaded.config, Config::default());
    }
}
