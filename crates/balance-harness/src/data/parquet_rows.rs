//! Parquet rows as text fields, for the schema loader in [`csv_schema`](super::csv_schema): every value
//! becomes the text a CSV field would hold, so parsing and validation stay in one place.
//!
//! Integers, floats and booleans become their Rust text (`3`, `1.5`, `1` for a float 1.0, `true`),
//! strings (and binary values, read as UTF-8) their content, dates, times and decimals their usual
//! text, and a null an empty field. A LIST column becomes a [`Cell::List`] of its elements' texts (a
//! sequence feature takes them as its ids); any other nested value (a struct, a map, a list inside a
//! list) is an error that names the row and the column.

use std::io::Read;
use std::path::Path;

#[cfg(feature = "parquet")]
use parquet::file::reader::{FileReader, SerializedFileReader};
#[cfg(feature = "parquet")]
use parquet::record::reader::RowIter;
#[cfg(feature = "parquet")]
use parquet::record::Field;

use crate::error::{HarnessError, Result};

/// The magic bytes that open (and close) every Parquet file.
const MAGIC: &[u8; 4] = b"PAR1";

/// True when `path` is to be read as Parquet: its extension is `.parquet` (any case) or the file
/// starts with the `PAR1` magic bytes.
pub fn is_parquet(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
        || starts_with_magic(path)
}

fn starts_with_magic(path: &Path) -> bool {
    let mut head = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head == MAGIC)
}

/// One field of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// A single value as text (empty for a null).
    Text(String),
    /// A LIST column's elements as text (a null element is an empty text).
    List(Vec<String>),
}

#[cfg(feature = "parquet")]
/// The rows of a Parquet file, in order, each as one [`Cell`] per top-level column.
pub struct ParquetRows {
    columns: Vec<String>,
    rows: RowIter<'static>,
    path: std::path::PathBuf,
    row: usize,
}

#[cfg(feature = "parquet")]
impl ParquetRows {
    /// Opens `path`; a file that is not Parquet (no `PAR1` magic) gets an error that says so.
    pub fn open(path: &Path) -> Result<Self> {
        let mut head = [0u8; 4];
        let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head));
        if let Err(e) = read {
            if e.kind() != std::io::ErrorKind::UnexpectedEof {
                return Err(HarnessError::BadData(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        }
        if &head != MAGIC {
            return Err(HarnessError::BadData(format!(
                "{}: not a Parquet file (it does not start with the `PAR1` magic bytes); \
                 a CSV file needs another extension than `.parquet`",
                path.display()
            )));
        }
        let reader = SerializedFileReader::try_from(path).map_err(|e| {
            HarnessError::BadData(format!("cannot read Parquet {}: {e}", path.display()))
        })?;
        let columns = reader
            .metadata()
            .file_metadata()
            .schema_descr()
            .root_schema()
            .get_fields()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        Ok(Self {
            columns,
            rows: reader.into_iter(),
            path: path.to_path_buf(),
            row: 0,
        })
    }

    /// The top-level column names, in the file's order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }
}

#[cfg(feature = "parquet")]
impl Iterator for ParquetRows {
    /// The row's number (1-based) and its cells, one per column of [`columns`](Self::columns).
    type Item = Result<(usize, Vec<Cell>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let row = self.rows.next()?;
        self.row += 1;
        let n = self.row;
        let path = &self.path;
        let cells = row
            .map_err(|e| HarnessError::BadData(format!("{}, row {n}: {e}", path.display())))
            .and_then(|row| {
                row.into_columns()
                    .into_iter()
                    .map(|(name, field)| {
                        cell(field).ok_or_else(|| {
                            HarnessError::BadData(format!(
                                "{}, row {n}, column `{name}`: a nested value (struct, map or list \
                                 of lists); only scalars and lists of scalars are read",
                                path.display()
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>>>()
            });
        Some(cells.map(|c| (n, c)))
    }
}

#[cfg(feature = "parquet")]
/// A field as a cell; `None` for a value nested deeper than a list of scalars.
fn cell(field: Field) -> Option<Cell> {
    match field {
        Field::ListInternal(list) => list
            .elements()
            .iter()
            .map(scalar_text)
            .collect::<Option<Vec<_>>>()
            .map(Cell::List),
        other => scalar_text(&other).map(Cell::Text),
    }
}

#[cfg(feature = "parquet")]
/// A scalar's text; `None` for a nested value.
fn scalar_text(field: &Field) -> Option<String> {
    Some(match field {
        Field::Null => String::new(),
        Field::Bool(v) => v.to_string(),
        Field::Byte(v) => v.to_string(),
        Field::Short(v) => v.to_string(),
        Field::Int(v) => v.to_string(),
        Field::Long(v) => v.to_string(),
        Field::UByte(v) => v.to_string(),
        Field::UShort(v) => v.to_string(),
        Field::UInt(v) => v.to_string(),
        Field::ULong(v) => v.to_string(),
        Field::Float16(v) => f32::from(*v).to_string(),
        Field::Float(v) => v.to_string(),
        Field::Double(v) => v.to_string(),
        Field::Str(s) => s.clone(),
        Field::Bytes(b) => String::from_utf8_lossy(b.data()).into_owned(),
        Field::Decimal(_)
        | Field::Date(_)
        | Field::TimeMillis(_)
        | Field::TimeMicros(_)
        | Field::TimestampMillis(_)
        | Field::TimestampMicros(_) => field.to_string(),
        Field::Group(_) | Field::ListInternal(_) | Field::MapInternal(_) => return None,
    })
}

/// Without the `parquet` feature there is no Parquet reader: opening a Parquet file is an error that
/// says how to get one (this type has no value).
#[cfg(not(feature = "parquet"))]
pub enum ParquetRows {}

#[cfg(not(feature = "parquet"))]
impl ParquetRows {
    /// Always an error: this build has no Parquet support.
    pub fn open(path: &Path) -> Result<Self> {
        Err(HarnessError::BadData(format!(
            "{}: reading Parquet needs the `parquet` feature of balance-harness (on by default), \
             which this build leaves out",
            path.display()
        )))
    }

    /// The top-level column names (never called: there is no value).
    pub fn columns(&self) -> &[String] {
        match *self {}
    }
}

#[cfg(not(feature = "parquet"))]
impl Iterator for ParquetRows {
    type Item = Result<(usize, Vec<Cell>)>;

    fn next(&mut self) -> Option<Self::Item> {
        match *self {}
    }
}
