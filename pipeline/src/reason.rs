//! Stable reason codes for quarantined files.
//!
//! Reason codes are data: they are stored in `ops.ingest_log.reason`, documented in the README and
//! matched by analysts, so a variant's string never changes once released.

use std::fmt;
use std::str::FromStr;

/// Why ingestion refused a file. The `as_str` form is the stable, documented code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReasonCode {
    /// The object key is not `inbox/<datanet>/<0xaddress>/<file>`, or a segment holds `..`,
    /// control characters or other characters that cannot be handled safely.
    InvalidPath,
    /// The contributor folder is not a valid `0x` address (40 hex digits, valid EIP-55 checksum if mixed case).
    InvalidAddress,
    /// The datanet folder names no datanet declared in the config.
    UnknownDatanet,
    /// The file is larger than the datanet's `max_file_bytes`.
    FileTooLarge,
    /// The bytes are not Parquet (no `PAR1` magic): e.g. a CSV renamed `.parquet`, or another extension.
    NotParquet,
    /// The file has Parquet magic but its footer or pages cannot be decoded (truncated, corrupted).
    CorruptParquet,
    /// A column required by the datanet's kind or config is absent.
    MissingColumn,
    /// A content column has a type other than UTF-8 string (or binary holding UTF-8).
    WrongColumnType,
    /// The file decodes but holds no rows.
    ZeroRows,
    /// A binary content column holds bytes that are not valid UTF-8.
    TextNotUtf8,
    /// A row's content is null, empty or only whitespace.
    EmptyText,
    /// A row's content is longer than the datanet's `max_text_bytes`.
    TextTooLong,
    /// The contributor already submitted these exact bytes to this datanet under another name.
    DuplicateFile,
    /// Accepting the file would exceed the contributor's rows-per-epoch limit.
    DailyRowLimitExceeded,
    /// Accepting the file would exceed the contributor's bytes-per-epoch limit.
    DailyByteLimitExceeded,
    /// The datanet requires `<file>.sig` and there is none.
    SignatureMissing,
    /// The `.sig` file is not a 65-byte hex signature.
    SignatureMalformed,
    /// The signature does not recover to the address in the path.
    SignatureMismatch,
}

impl ReasonCode {
    /// Every code, in documentation order.
    pub const ALL: [ReasonCode; 18] = [
        ReasonCode::InvalidPath,
        ReasonCode::InvalidAddress,
        ReasonCode::UnknownDatanet,
        ReasonCode::FileTooLarge,
        ReasonCode::NotParquet,
        ReasonCode::CorruptParquet,
        ReasonCode::MissingColumn,
        ReasonCode::WrongColumnType,
        ReasonCode::ZeroRows,
        ReasonCode::TextNotUtf8,
        ReasonCode::EmptyText,
        ReasonCode::TextTooLong,
        ReasonCode::DuplicateFile,
        ReasonCode::DailyRowLimitExceeded,
        ReasonCode::DailyByteLimitExceeded,
        ReasonCode::SignatureMissing,
        ReasonCode::SignatureMalformed,
        ReasonCode::SignatureMismatch,
    ];

    /// The stable snake_case code stored in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::InvalidPath => "invalid_path",
            ReasonCode::InvalidAddress => "invalid_address",
            ReasonCode::UnknownDatanet => "unknown_datanet",
            ReasonCode::FileTooLarge => "file_too_large",
            ReasonCode::NotParquet => "not_parquet",
            ReasonCode::CorruptParquet => "corrupt_parquet",
            ReasonCode::MissingColumn => "missing_column",
            ReasonCode::WrongColumnType => "wrong_column_type",
            ReasonCode::ZeroRows => "zero_rows",
            ReasonCode::TextNotUtf8 => "text_not_utf8",
            ReasonCode::EmptyText => "empty_text",
            ReasonCode::TextTooLong => "text_too_long",
            ReasonCode::DuplicateFile => "duplicate_file",
            ReasonCode::DailyRowLimitExceeded => "daily_row_limit_exceeded",
            ReasonCode::DailyByteLimitExceeded => "daily_byte_limit_exceeded",
            ReasonCode::SignatureMissing => "signature_missing",
            ReasonCode::SignatureMalformed => "signature_malformed",
            ReasonCode::SignatureMismatch => "signature_mismatch",
        }
    }

    /// One line for the README and `--help`.
    pub fn description(self) -> &'static str {
        match self {
            ReasonCode::InvalidPath => "key is not inbox/<datanet>/<0xaddress>/<file>, or holds `..`/control characters",
            ReasonCode::InvalidAddress => "contributor folder is not a 0x address (40 hex digits, EIP-55 if mixed case)",
            ReasonCode::UnknownDatanet => "datanet folder is not declared in the config",
            ReasonCode::FileTooLarge => "file is over the datanet's max_file_bytes",
            ReasonCode::NotParquet => "bytes are not Parquet (no PAR1 magic), e.g. CSV renamed .parquet",
            ReasonCode::CorruptParquet => "Parquet footer or pages cannot be decoded (truncated or corrupted)",
            ReasonCode::MissingColumn => "a column required by the datanet is absent",
            ReasonCode::WrongColumnType => "a content column is not a UTF-8 string",
            ReasonCode::ZeroRows => "the file holds no rows",
            ReasonCode::TextNotUtf8 => "a binary content column holds invalid UTF-8",
            ReasonCode::EmptyText => "a row's content is null, empty or whitespace",
            ReasonCode::TextTooLong => "a row's content is over the datanet's max_text_bytes",
            ReasonCode::DuplicateFile => "the contributor already submitted these exact bytes to this datanet",
            ReasonCode::DailyRowLimitExceeded => "contributor would exceed the rows-per-epoch limit",
            ReasonCode::DailyByteLimitExceeded => "contributor would exceed the bytes-per-epoch limit",
            ReasonCode::SignatureMissing => "datanet requires <file>.sig and there is none",
            ReasonCode::SignatureMalformed => ".sig is not a 65-byte hex signature",
            ReasonCode::SignatureMismatch => "signature does not recover to the address in the path",
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReasonCode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ReasonCode::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown reason code `{s}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in ReasonCode::ALL {
            assert!(seen.insert(c.as_str()), "duplicate code {c}");
            assert_eq!(c.as_str().parse::<ReasonCode>(), Ok(c));
            assert!(c.as_str().chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_'));
        }
    }
}
