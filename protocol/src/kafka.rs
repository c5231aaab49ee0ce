//! Kafka client settings as the binaries take them on the command line.

/// Parses one extra librdkafka setting given as `KEY=VALUE` (for example
/// `security.protocol=SASL_SSL`); the value may itself contain `=`.
pub fn parse_option(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected KEY=VALUE, got `{text}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_key_value_settings() {
        assert_eq!(
            parse_option("sasl.jaas.config=a=b"),
            Ok(("sasl.jaas.config".to_owned(), "a=b".to_owned()))
        );
        assert!(parse_option("novalue").is_err());
        assert!(parse_option("=x").is_err());
    }
}
