//! Bring your own data: a CSV (or Parquet) file plus a schema (TOML or JSON) that maps columns to
//! features and label columns to tasks, no code.
//!
//! ```toml
//! delimiter = ","           # default ","
//! embedding_dim = 8         # width of every categorical embedding (default 8)
//! holdout = 0.2             # the last 20 % of rows are held out for evaluation (default 0.2)
//!
//! [[features]]
//! column = "age"
//! kind = "dense"            # standardised with the training rows' mean and standard deviation
//!
//! [[features]]
//! column = "city"
//! kind = "sparse"           # categorical: each distinct training value gets an id; unseen -> 0
//!
//! [[tasks]]
//! name = "click"
//! column = "clicked"
//! kind = "binary"
//! positive = ["1", "yes"]   # the values that make the label positive
//!
//! [[tasks]]
//! name = "revenue"
//! column = "revenue"
//! kind = "regression"
//! ```
//!
//! The file has a header row naming its columns. Errors name the file, the line, the column and the value
//! (a bad number, an unknown column, an empty file); an unknown feature kind is a schema error.
//!
//! # Parquet
//!
//! A file named `*.parquet`, or one that starts with the `PAR1` magic bytes, is read as Parquet with the
//! same schema (`delimiter` is then unused): its top-level columns play the header's part, and each
//! value becomes the text a CSV field would hold (see [`parquet_rows`](super::parquet_rows)), so the
//! rules above apply unchanged: integers, floats and strings as their text (a float 1.0 is `1`), booleans
//! as `true` / `false` (a binary task on a boolean column needs `positive = ["true"]`), a null as an
//! empty field (a null dense value is a "finite number" error). A sequence feature takes either a LIST
//! column, each element one id (no splitting; null elements are skipped), or a string column already
//! joined with its `separator`; a LIST column anywhere else is an error. Errors name `row N` (1-based,
//! no header) instead of `line N`; a file named `.parquet` that is not Parquet, a missing column (with
//! the file's columns listed) and a file without rows each get their own error. Compression: none or
//! snappy.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::batch::Batch;
use crate::data::encode::{Standardiser, Vocabulary};
use crate::data::parquet_rows::{is_parquet, Cell, ParquetRows};
use crate::data::{matrix, Dataset, Task, TaskKind};
use crate::error::{HarnessError, Result};
use crate::input::{InputConfig, Pooling, SequenceFeature};

/// How a column becomes a feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// A number, standardised.
    Dense,
    /// A category, embedded.
    Sparse,
    /// A list of categories in one field (split on `separator`), embedded and pooled.
    Sequence,
}

/// One feature column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureColumn {
    /// The column's header name.
    pub column: String,
    /// Its kind.
    pub kind: FeatureKind,
    /// Sequence features: the separator between ids in the field (default `|`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub separator: Option<String>,
    /// Sequence features: at most this many ids are kept, the first ones (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_len: Option<usize>,
    /// Sequence features: how the ids' embeddings are pooled (default `mean`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooling: Option<Pooling>,
    /// Sparse and sequence features: embed with the table of this sparse column (one vocabulary for both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shares_table_with: Option<String>,
}

/// One task and the rule that makes its label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskColumn {
    /// The task's name.
    pub name: String,
    /// The label column's header name.
    pub column: String,
    /// Binary or regression.
    pub kind: TaskKind,
    /// Binary tasks: the values that make the label positive (default `["1"]`).
    #[serde(default)]
    pub positive: Option<Vec<String>>,
}

/// The schema file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    /// Field separator (one character, default `,`).
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// Width of every categorical embedding (default 8).
    #[serde(default = "default_embedding_dim")]
    pub embedding_dim: i64,
    /// Fraction of rows, taken from the end of the file, held out for evaluation (default 0.2).
    #[serde(default = "default_holdout")]
    pub holdout: f64,
    /// Feature columns.
    pub features: Vec<FeatureColumn>,
    /// Tasks.
    pub tasks: Vec<TaskColumn>,
}

fn default_delimiter() -> char {
    ','
}
fn default_embedding_dim() -> i64 {
    8
}
fn default_holdout() -> f64 {
    0.2
}

fn schema_error(
    path: &Path,
    field: &str,
    value: impl std::fmt::Display,
    expected: &str,
) -> HarnessError {
    HarnessError::invalid(
        "schema",
        format!("{field} (in {})", path.display()),
        value,
        expected,
    )
}

impl Schema {
    /// Reads a schema from a `.toml` or `.json` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            HarnessError::BadData(format!("cannot read schema {}: {e}", path.display()))
        })?;
        let schema: Schema = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text)
                .map_err(|e| HarnessError::BadData(format!("schema {}: {e}", path.display())))?
        } else {
            toml::from_str(&text)
                .map_err(|e| HarnessError::BadData(format!("schema {}: {e}", path.display())))?
        };
        schema.check(path)?;
        Ok(schema)
    }

    /// Checks the schema's own consistency.
    pub fn check(&self, path: &Path) -> Result<()> {
        if self.features.is_empty() {
            return Err(schema_error(path, "features", "[]", "at least one feature"));
        }
        if self.tasks.is_empty() {
            return Err(schema_error(path, "tasks", "[]", "at least one task"));
        }
        if !(0.0..1.0).contains(&self.holdout) || self.holdout == 0.0 {
            return Err(schema_error(
                path,
                "holdout",
                self.holdout,
                "a fraction in (0, 1)",
            ));
        }
        if self.embedding_dim < 1 {
            return Err(schema_error(
                path,
                "embedding_dim",
                self.embedding_dim,
                "a width >= 1",
            ));
        }
        for (i, f) in self.features.iter().enumerate() {
            if let Some(owner) = &f.shares_table_with {
                let target = self.features.iter().find(|g| &g.column == owner);
                let valid = f.kind != FeatureKind::Dense
                    && target.is_some_and(|g| {
                        g.kind == FeatureKind::Sparse
                            && g.shares_table_with.is_none()
                            && g.column != f.column
                    });
                if !valid {
                    return Err(schema_error(path, &format!("features[{i}].shares_table_with"), owner, "a sparse column (that does not itself share) for a sparse or sequence feature"));
                }
            }
            if f.kind != FeatureKind::Sequence
                && (f.separator.is_some() || f.max_len.is_some() || f.pooling.is_some())
            {
                return Err(schema_error(
                    path,
                    &format!("features[{i}]"),
                    &f.column,
                    "separator, max_len and pooling only on sequence features",
                ));
            }
            if f.max_len == Some(0) {
                return Err(schema_error(
                    path,
                    &format!("features[{i}].max_len"),
                    0,
                    "at least 1",
                ));
            }
        }
        for (i, t) in self.tasks.iter().enumerate() {
            if t.kind == TaskKind::Regression && t.positive.is_some() {
                return Err(schema_error(
                    path,
                    &format!("tasks[{i}].positive"),
                    format!("{:?}", t.positive),
                    "no `positive` for a regression task",
                ));
            }
        }
        Ok(())
    }
}

/// Where a row was read: `line N` of a CSV file (counting the header), `row N` of a Parquet file.
#[derive(Debug, Clone, Copy)]
struct Location {
    unit: &'static str,
    n: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.unit, self.n)
    }
}

fn data_error(
    path: &Path,
    at: Location,
    column: &str,
    value: &str,
    expected: &str,
) -> HarnessError {
    HarnessError::BadData(format!(
        "{}, {at}, column `{column}`: value {value:?}, expected {expected}",
        path.display()
    ))
}

/// One row's fields, from either kind of file.
enum Record {
    Csv(csv::StringRecord),
    Parquet(Vec<Cell>),
}

impl Record {
    /// Field `c` as text (empty when the row is short); `Err` with the elements for a list.
    fn text(&self, c: usize) -> std::result::Result<&str, String> {
        match self {
            Record::Csv(r) => Ok(r.get(c).unwrap_or("")),
            Record::Parquet(cells) => match cells.get(c) {
                None => Ok(""),
                Some(Cell::Text(t)) => Ok(t),
                Some(Cell::List(items)) => Err(format!("[{}]", items.join(", "))),
            },
        }
    }

    /// Field `c` as a sequence's ids: a text split on `separator`, or a list's elements.
    fn items<'a>(&'a self, c: usize, separator: &'a str) -> Vec<&'a str> {
        match self {
            Record::Parquet(cells) => match cells.get(c) {
                Some(Cell::List(items)) => items.iter().map(String::as_str).collect(),
                Some(Cell::Text(t)) => t.split(separator).collect(),
                None => Vec::new(),
            },
            Record::Csv(r) => r.get(c).unwrap_or("").split(separator).collect(),
        }
    }
}

/// The rows of a CSV or a Parquet file, with the column names.
enum Rows {
    Csv {
        header: Vec<String>,
        records: csv::StringRecordsIntoIter<std::fs::File>,
        read: usize,
    },
    Parquet(ParquetRows),
}

impl Rows {
    /// Opens `path`: Parquet when [`is_parquet`] says so, CSV (with the schema's delimiter) otherwise.
    fn open(path: &Path, schema: &Schema) -> Result<Self> {
        if is_parquet(path) {
            return Ok(Rows::Parquet(ParquetRows::open(path)?));
        }
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(u8::try_from(schema.delimiter).map_err(|_| {
                HarnessError::invalid(
                    "schema",
                    "delimiter",
                    schema.delimiter,
                    "an ASCII character",
                )
            })?)
            .from_path(path)
            .map_err(|e| HarnessError::BadData(format!("cannot read {}: {e}", path.display())))?;
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| HarnessError::BadData(format!("{}: no header row: {e}", path.display())))?
            .iter()
            .map(str::to_string)
            .collect();
        Ok(Rows::Csv {
            header,
            records: reader.into_records(),
            read: 0,
        })
    }

    fn columns(&self) -> &[String] {
        match self {
            Rows::Csv { header, .. } => header,
            Rows::Parquet(rows) => rows.columns(),
        }
    }

    /// Where the column names come from, for the missing-column error.
    fn columns_from(&self) -> &'static str {
        match self {
            Rows::Csv { .. } => "the header",
            Rows::Parquet(_) => "the Parquet file",
        }
    }

    /// The next row and where it is; errors name the file and the line or row.
    fn next_row(&mut self, path: &Path) -> Option<Result<(Location, Record)>> {
        match self {
            Rows::Csv { records, read, .. } => {
                let record = records.next()?;
                *read += 1;
                let at = Location {
                    unit: "line",
                    n: *read + 1, // 1-based, after the header
                };
                Some(
                    record.map(|r| (at, Record::Csv(r))).map_err(|e| {
                        HarnessError::BadData(format!("{}, {at}: {e}", path.display()))
                    }),
                )
            }
            Rows::Parquet(rows) => Some(
                rows.next()?
                    .map(|(n, cells)| (Location { unit: "row", n }, Record::Parquet(cells))),
            ),
        }
    }
}

/// Reads `path` (CSV, or Parquet when it is named `*.parquet` or starts with the `PAR1` magic) as
/// `schema` says and splits it into a training set and the held-out tail.
///
/// Three steps: the schema's columns are found in the file, every row is read and checked, and the rows
/// are encoded with the statistics and vocabularies of the training rows only.
pub fn load(path: &Path, schema: &Schema) -> Result<(Dataset, Dataset)> {
    let mut source = Rows::open(path, schema)?;
    let columns = Columns::resolve(schema, &source, path)?;
    let raw = read_rows(&mut source, path, &columns)?;
    encode(raw, schema, &columns, path)
}

/// The schema's columns, each with its position in the file, by feature kind.
struct Columns<'s> {
    dense: Vec<(usize, &'s str)>,
    sparse: Vec<(usize, &'s str)>,
    sequences: Vec<(usize, &'s FeatureColumn)>,
    tasks: Vec<(usize, &'s TaskColumn)>,
}

impl<'s> Columns<'s> {
    /// Finds every column the schema names among the file's columns; a missing one is an error that
    /// lists the file's columns.
    fn resolve(schema: &'s Schema, source: &Rows, path: &Path) -> Result<Self> {
        let header = source.columns();
        let index = |name: &str| -> Result<usize> {
            header.iter().position(|h| h == name).ok_or_else(|| {
                HarnessError::BadData(format!(
                    "{}: column `{name}` named in the schema is not in {} (columns: {})",
                    path.display(),
                    source.columns_from(),
                    header.join(", ")
                ))
            })
        };
        let of_kind = |kind: FeatureKind| schema.features.iter().filter(move |f| f.kind == kind);
        Ok(Self {
            dense: of_kind(FeatureKind::Dense)
                .map(|f| Ok((index(&f.column)?, f.column.as_str())))
                .collect::<Result<_>>()?,
            sparse: of_kind(FeatureKind::Sparse)
                .map(|f| Ok((index(&f.column)?, f.column.as_str())))
                .collect::<Result<_>>()?,
            sequences: of_kind(FeatureKind::Sequence)
                .map(|f| Ok((index(&f.column)?, f)))
                .collect::<Result<_>>()?,
            tasks: schema
                .tasks
                .iter()
                .map(|t| Ok((index(&t.column)?, t)))
                .collect::<Result<_>>()?,
        })
    }
}

/// Every row's fields as the schema reads them, row-major, before encoding.
struct RawRows {
    rows: usize,
    /// `rows x dense` finite numbers.
    dense: Vec<f64>,
    /// `rows x sparse` values.
    sparse: Vec<String>,
    /// `rows x sequences` id lists (trimmed, empty ids dropped, at most `max_len`).
    sequences: Vec<Vec<String>>,
    /// `rows x tasks` labels.
    labels: Vec<f32>,
}

/// Reads and checks every row of `source`: dense fields and regression labels must be finite numbers,
/// list values only feed sequence features; errors name the file, the line or row, the column and the
/// value.
fn read_rows(source: &mut Rows, path: &Path, columns: &Columns<'_>) -> Result<RawRows> {
    let mut raw = RawRows {
        rows: 0,
        dense: Vec::new(),
        sparse: Vec::new(),
        sequences: Vec::new(),
        labels: Vec::new(),
    };
    while let Some(next) = source.next_row(path) {
        let (at, record) = next?;
        let field = |c: usize, name: &str| -> Result<&str> {
            record.text(c).map_err(|list| {
                data_error(
                    path,
                    at,
                    name,
                    &list,
                    "a single value (a list column can only be a sequence feature)",
                )
            })
        };
        for &(c, name) in &columns.dense {
            let v = field(c, name)?;
            let x: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|x: &f64| x.is_finite())
                .ok_or_else(|| data_error(path, at, name, v, "a finite number"))?;
            raw.dense.push(x);
        }
        for &(c, name) in &columns.sparse {
            raw.sparse.push(field(c, name)?.to_string());
        }
        for &(c, f) in &columns.sequences {
            let separator = f.separator.as_deref().unwrap_or("|");
            let max_len = f.max_len.unwrap_or(50);
            raw.sequences.push(
                record
                    .items(c, separator)
                    .into_iter()
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .take(max_len)
                    .map(str::to_string)
                    .collect(),
            );
        }
        for &(c, task) in &columns.tasks {
            let v = field(c, &task.column)?;
            raw.labels.push(
                label(task, v)
                    .ok_or_else(|| data_error(path, at, &task.column, v, "a finite number"))?,
            );
        }
        raw.rows += 1;
    }
    Ok(raw)
}

/// The label `task` gives the field `v`: 0/1 for a binary task (positive when `v` is one of the
/// `positive` values, default `1`), the number for a regression task (`None` when not a finite number).
fn label(task: &TaskColumn, v: &str) -> Option<f32> {
    match task.kind {
        TaskKind::Binary => {
            let positive = task.positive.as_deref().unwrap_or(&[]);
            let is_positive = if positive.is_empty() {
                v.trim() == "1"
            } else {
                positive.iter().any(|p| p == v.trim())
            };
            Some(f32::from(u8::from(is_positive)))
        }
        TaskKind::Regression => v.trim().parse::<f32>().ok().filter(|x| x.is_finite()),
    }
}

/// Which table each feature embeds with: for sparse column `j`, the sparse column whose vocabulary it
/// uses (itself unless it shares); for sequence `i`, the sparse column it shares with, if any.
fn tables(schema: &Schema, columns: &Columns<'_>) -> (Vec<usize>, Vec<Option<usize>>) {
    let owner_of = |column: &str| -> Option<usize> {
        columns.sparse.iter().position(|(_, name)| *name == column)
    };
    let sparse = columns
        .sparse
        .iter()
        .enumerate()
        .map(|(j, (_, name))| {
            let f = schema.features.iter().find(|f| f.column == *name);
            f.and_then(|f| f.shares_table_with.as_deref())
                .and_then(owner_of)
                .unwrap_or(j)
        })
        .collect();
    let sequences = columns
        .sequences
        .iter()
        .map(|(_, f)| f.shares_table_with.as_deref().and_then(owner_of))
        .collect();
    (sparse, sequences)
}

/// Encodes the rows: the last `holdout` share is held out; dense columns are standardised and
/// vocabularies built (ids `1..` in order of appearance, 0 for unseen; a feature that shares a table
/// shares its owner's vocabulary) from the training rows only; sequences are padded with `-1`.
fn encode(
    raw: RawRows,
    schema: &Schema,
    columns: &Columns<'_>,
    path: &Path,
) -> Result<(Dataset, Dataset)> {
    let RawRows {
        rows,
        mut dense,
        sparse: raw_sparse,
        sequences: raw_sequences,
        labels,
    } = raw;
    if rows < 2 {
        return Err(HarnessError::BadData(format!(
            "{}: {rows} data row(s); at least 2 are needed (training and held out)",
            path.display()
        )));
    }
    let holdout = ((rows as f64 * schema.holdout).round() as usize).clamp(1, rows - 1);
    let train_rows = rows - holdout;

    let d = columns.dense.len();
    Standardiser::fit(&dense, d, train_rows).apply_f64(&mut dense);

    let s = columns.sparse.len();
    let q = columns.sequences.len();
    let (sparse_table, sequence_table) = tables(schema, columns);
    // Vocabulary k < s: the table of sparse column k; s + i: sequence i's own.
    let mut vocabs: Vec<Vocabulary<String>> = vec![Vocabulary::default(); s + q];
    let seq_vocab = |i: usize| sequence_table[i].unwrap_or(s + i);
    for r in 0..train_rows {
        for j in 0..s {
            vocabs[sparse_table[j]].insert(raw_sparse[r * s + j].clone());
        }
        for i in 0..q {
            for token in &raw_sequences[r * q + i] {
                vocabs[seq_vocab(i)].insert(token.clone());
            }
        }
    }
    let ids: Vec<i64> = (0..rows * s)
        .map(|k| vocabs[sparse_table[k % s]].id(raw_sparse[k].as_str()))
        .collect();
    let vocab_sizes: Vec<i64> = (0..s).map(|j| vocabs[sparse_table[j]].size()).collect();
    let mut sequences = Vec::with_capacity(q);
    let mut sequence_features = Vec::with_capacity(q);
    for (i, &(_, f)) in columns.sequences.iter().enumerate() {
        let longest = (0..rows)
            .map(|r| raw_sequences[r * q + i].len())
            .max()
            .unwrap_or(0)
            .max(1);
        let mut padded = vec![-1i64; rows * longest];
        for r in 0..rows {
            for (k, token) in raw_sequences[r * q + i].iter().enumerate() {
                padded[r * longest + k] = vocabs[seq_vocab(i)].id(token.as_str());
            }
        }
        sequences.push(matrix(&padded, rows, longest, "a sequence feature")?);
        sequence_features.push(SequenceFeature {
            vocab_size: vocabs[seq_vocab(i)].size(),
            pooling: f.pooling.unwrap_or_default(),
            shares_table_of: sequence_table[i],
        });
    }
    let shared = sparse_table.iter().enumerate().any(|(j, &t)| t != j);
    let dense32: Vec<f32> = dense.iter().map(|&x| x as f32).collect();
    let t = schema.tasks.len();
    let all = Dataset {
        examples: Batch {
            dense: matrix(&dense32, rows, d, "dense features")?,
            sparse: matrix(&ids, rows, s, "categorical ids")?,
            sequences,
            labels: matrix(&labels, rows, t, "labels")?,
        },
        input: InputConfig {
            dense: d as i64,
            vocab_sizes,
            embedding_dim: schema.embedding_dim,
            tables: shared.then_some(sparse_table),
            sequences: sequence_features,
        },
        tasks: schema
            .tasks
            .iter()
            .map(|task| Task {
                name: task.name.clone(),
                kind: task.kind,
            })
            .collect(),
    };
    all.split_at(train_rows as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str, content: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("balance-csv-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    const SCHEMA: &str = r#"
        holdout = 0.25
        [[features]]
        column = "age"
        kind = "dense"
        [[features]]
        column = "city"
        kind = "sparse"
        [[tasks]]
        name = "click"
        column = "clicked"
        kind = "binary"
        positive = ["yes"]
        [[tasks]]
        name = "revenue"
        column = "rev"
        kind = "regression"
    "#;

    #[test]
    fn loads_standardises_and_encodes() {
        let schema = Schema::from_file(&scratch("s.toml", SCHEMA)).unwrap();
        let csv = scratch(
            "d.csv",
            "age,city,clicked,rev\n20,paris,yes,1.5\n40,rome,no,0\n30,paris,no,2\n50,oslo,yes,4\n",
        );
        let (train, eval) = load(&csv, &schema).unwrap();
        assert_eq!((train.len(), eval.len()), (3, 1));
        assert_eq!(train.input.vocab_sizes, vec![3]); // unseen + paris, rome
        assert_eq!(
            Vec::<i64>::try_from(eval.examples.sparse.reshape([-1])).unwrap(),
            vec![0]
        ); // oslo unseen
        let dense = Vec::<f32>::try_from(train.examples.dense.reshape([-1])).unwrap();
        let std = (200.0f32 / 3.0).sqrt();
        assert!(
            (dense[0] - (-10.0 / std)).abs() < 1e-5 && dense[2].abs() < 1e-6,
            "{dense:?}"
        );
        let labels = Vec::<f32>::try_from(train.examples.labels.reshape([-1])).unwrap();
        assert_eq!(labels, vec![1.0, 1.5, 0.0, 0.0, 0.0, 2.0]);
        assert_eq!(train.tasks[1], Task::regression("revenue"));
    }

    #[test]
    fn bad_value_names_file_line_column_and_value() {
        let schema = Schema::from_file(&scratch("s2.toml", SCHEMA)).unwrap();
        let csv = scratch(
            "bad.csv",
            "age,city,clicked,rev\n20,paris,yes,1\nold,rome,no,0\n",
        );
        let err = load(&csv, &schema).unwrap_err().to_string();
        assert!(
            err.contains("bad.csv, line 3, column `age`: value \"old\", expected a finite number"),
            "{err}"
        );
    }

    #[test]
    fn missing_column_empty_file_and_unknown_kind_each_have_their_error() {
        let schema = Schema::from_file(&scratch("s3.toml", SCHEMA)).unwrap();
        let csv = scratch("nocol.csv", "age,town,clicked,rev\n1,a,yes,1\n2,b,no,2\n");
        let err = load(&csv, &schema).unwrap_err().to_string();
        assert!(err.contains("column `city` named in the schema is not in the header (columns: age, town, clicked, rev)"), "{err}");
        let csv = scratch("empty.csv", "age,city,clicked,rev\n");
        let err = load(&csv, &schema).unwrap_err().to_string();
        assert!(err.contains("0 data row(s)"), "{err}");
        let err = Schema::from_file(&scratch(
            "s4.toml",
            &SCHEMA.replace("kind = \"sparse\"", "kind = \"image\""),
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("unknown variant `image`, expected one of `dense`, `sparse`, `sequence`"),
            "{err}"
        );
        let err = Schema::from_file(&scratch(
            "s5.toml",
            &SCHEMA.replace("holdout = 0.25", "holdout = 1.5"),
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("field `holdout") && err.contains("= 1.5"),
            "{err}"
        );
    }

    #[test]
    fn sequences_and_shared_tables_share_one_vocabulary() {
        let schema = Schema::from_file(&scratch(
            "seq.toml",
            r#"
            holdout = 0.25
            [[features]]
            column = "item"
            kind = "sparse"
            [[features]]
            column = "history"
            kind = "sequence"
            separator = ";"
            pooling = "sum"
            shares_table_with = "item"
            [[tasks]]
            name = "click"
            column = "y"
            kind = "binary"
        "#,
        ))
        .unwrap();
        let csv = scratch(
            "seq.csv",
            "item,history,y\na,b;c,1\nb,,0\nc,a;a;b,1\nd,z;a,0\n",
        );
        let (train, eval) = load(&csv, &schema).unwrap();
        // One vocabulary for item and history, from the training rows: a=1, b=2, c=3 (unseen -> 0).
        assert_eq!(train.input.vocab_sizes, vec![4]);
        assert_eq!(train.input.sequences[0].shares_table_of, Some(0));
        assert_eq!(train.input.sequences[0].pooling, crate::input::Pooling::Sum);
        assert_eq!(
            Vec::<i64>::try_from(train.examples.sparse.reshape([-1])).unwrap(),
            vec![1, 2, 3]
        );
        let history = Vec::<i64>::try_from(train.examples.sequences[0].reshape([-1])).unwrap();
        assert_eq!(history, vec![2, 3, -1, -1, -1, -1, 1, 1, 2]); // padded to the longest (3)
        let held_out = Vec::<i64>::try_from(eval.examples.sequences[0].reshape([-1])).unwrap();
        assert_eq!(held_out, vec![0, 1, -1]); // z unseen
                                              // The encoder accepts it.
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let enc = crate::input::InputEncoder::new(&vs.root(), &train.input).unwrap();
        assert_eq!(enc.forward(&train.examples).unwrap().size(), vec![3, 16]);
    }

    #[test]
    fn sharing_with_a_missing_or_dense_column_is_a_schema_error() {
        let text = r#"
            [[features]]
            column = "x"
            kind = "dense"
            [[features]]
            column = "h"
            kind = "sequence"
            shares_table_with = "x"
            [[tasks]]
            name = "t"
            column = "y"
            kind = "binary"
        "#;
        let err = Schema::from_file(&scratch("share.toml", text))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("features[1].shares_table_with") && err.contains("a sparse column"),
            "{err}"
        );
    }

    #[cfg(not(feature = "parquet"))]
    #[test]
    fn without_the_parquet_feature_a_parquet_file_is_a_clear_error() {
        let schema = Schema::from_file(&scratch("nopq.toml", SCHEMA)).unwrap();
        let err = load(&scratch("data.parquet", "x,y\n1,0\n"), &schema)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`parquet` feature"), "{err}");
    }

    #[cfg(feature = "parquet")]
    mod parquet_input {
        use super::*;
        use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
        use parquet::file::properties::WriterProperties;
        use parquet::file::writer::SerializedFileWriter;
        use parquet::schema::parser::parse_message_type;
        use std::sync::Arc;

        /// One column's values with its definition and repetition levels (`None` where the column
        /// has none).
        enum Column<'a> {
            Double(&'a [f64], Option<&'a [i16]>),
            Long(&'a [i64], Option<&'a [i16]>, Option<&'a [i16]>),
            Text(&'a [&'a str], Option<&'a [i16]>),
        }

        /// Writes one row group (none when `columns` is empty), snappy-compressed.
        fn write_parquet(name: &str, message: &str, columns: &[Column]) -> std::path::PathBuf {
            let path = scratch(name, "");
            let schema = Arc::new(parse_message_type(message).unwrap());
            let props = Arc::new(
                WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::SNAPPY)
                    .build(),
            );
            let file = std::fs::File::create(&path).unwrap();
            let mut writer = SerializedFileWriter::new(file, schema, props).unwrap();
            if !columns.is_empty() {
                let mut group = writer.next_row_group().unwrap();
                for column in columns {
                    let mut w = group.next_column().unwrap().unwrap();
                    match column {
                        Column::Double(v, d) => {
                            w.typed::<DoubleType>().write_batch(v, *d, None).unwrap();
                        }
                        Column::Long(v, d, r) => {
                            w.typed::<Int64Type>().write_batch(v, *d, *r).unwrap();
                        }
                        Column::Text(v, d) => {
                            let bytes: Vec<ByteArray> =
                                v.iter().map(|s| ByteArray::from(*s)).collect();
                            w.typed::<ByteArrayType>()
                                .write_batch(&bytes, *d, None)
                                .unwrap();
                        }
                    }
                    w.close().unwrap();
                }
                group.close().unwrap();
            }
            writer.close().unwrap();
            path
        }

        fn assert_same(a: &Dataset, b: &Dataset) {
            assert_eq!(a.input, b.input);
            assert_eq!(a.tasks, b.tasks);
            let (x, y) = (&a.examples, &b.examples);
            for (s, t) in [
                (&x.dense, &y.dense),
                (&x.sparse, &y.sparse),
                (&x.labels, &y.labels),
            ]
            .into_iter()
            .chain(x.sequences.iter().zip(&y.sequences))
            {
                assert_eq!((s.kind(), s.size()), (t.kind(), t.size()));
                assert!(s.equal(t), "{s} != {t}");
            }
            assert_eq!(x.sequences.len(), y.sequences.len());
        }

        const MIXED_SCHEMA: &str = r#"
            holdout = 0.25
            [[features]]
            column = "age"
            kind = "dense"
            [[features]]
            column = "n"
            kind = "dense"
            [[features]]
            column = "city"
            kind = "sparse"
            [[features]]
            column = "item"
            kind = "sparse"
            [[features]]
            column = "history"
            kind = "sequence"
            separator = ";"
            shares_table_with = "item"
            [[features]]
            column = "tags"
            kind = "sequence"
            [[tasks]]
            name = "like"
            column = "y"
            kind = "binary"
            [[tasks]]
            name = "click"
            column = "clicked"
            kind = "binary"
            positive = ["yes"]
            [[tasks]]
            name = "revenue"
            column = "rev"
            kind = "regression"
        "#;

        #[test]
        fn parquet_loads_exactly_as_the_equivalent_csv() {
            let schema = Schema::from_file(&scratch("pq.toml", MIXED_SCHEMA)).unwrap();
            let csv = scratch(
                "pq.csv",
                "age,n,city,item,history,tags,y,clicked,rev\n\
                 20.5,3,paris,7,2;3,x|y,1,yes,1.5\n\
                 40,1,rome,8,,y,0,no,0\n\
                 30,2,paris,9,1;1;2,,0,no,2.25\n\
                 50,5,oslo,7,9;1,x,1,yes,4\n",
            );
            // history: a list<int64> (one id per element, an empty list in row 2); tags: a string
            // already joined with `|`, null in row 3.
            let parquet = write_parquet(
                "pq.parquet",
                "message m {
                    REQUIRED DOUBLE age;
                    REQUIRED INT64 n;
                    REQUIRED BYTE_ARRAY city (UTF8);
                    REQUIRED INT64 item;
                    REQUIRED GROUP history (LIST) {
                        REPEATED GROUP list { REQUIRED INT64 element; }
                    }
                    OPTIONAL BYTE_ARRAY tags (UTF8);
                    REQUIRED INT64 y;
                    REQUIRED BYTE_ARRAY clicked (UTF8);
                    REQUIRED DOUBLE rev;
                }",
                &[
                    Column::Double(&[20.5, 40.0, 30.0, 50.0], None),
                    Column::Long(&[3, 1, 2, 5], None, None),
                    Column::Text(&["paris", "rome", "paris", "oslo"], None),
                    Column::Long(&[7, 8, 9, 7], None, None),
                    Column::Long(
                        &[2, 3, 1, 1, 2, 9, 1],
                        Some(&[1, 1, 0, 1, 1, 1, 1, 1]),
                        Some(&[0, 1, 0, 0, 1, 1, 0, 1]),
                    ),
                    Column::Text(&["x|y", "y", "x"], Some(&[1, 1, 0, 1])),
                    Column::Long(&[1, 0, 0, 1], None, None),
                    Column::Text(&["yes", "no", "no", "yes"], None),
                    Column::Double(&[1.5, 0.0, 2.25, 4.0], None),
                ],
            );
            let (csv_train, csv_eval) = load(&csv, &schema).unwrap();
            let (train, eval) = load(&parquet, &schema).unwrap();
            assert_same(&train, &csv_train);
            assert_same(&eval, &csv_eval);
            // Not vacuous: the sequences and labels hold what the rows say.
            let history = Vec::<i64>::try_from(train.examples.sequences[0].reshape([-1])).unwrap();
            // One vocabulary for item and history, row by row: 7=1, 2=2, 3=3, 8=4, 9=5, 1=6.
            assert_eq!(history, vec![2, 3, -1, -1, -1, -1, 6, 6, 2]);
            let tags = Vec::<i64>::try_from(train.examples.sequences[1].reshape([-1])).unwrap();
            assert_eq!(tags, vec![1, 2, 2, -1, -1, -1]);
            let labels = Vec::<f32>::try_from(train.examples.labels.reshape([-1])).unwrap();
            assert_eq!(labels, vec![1.0, 1.0, 1.5, 0.0, 0.0, 0.0, 0.0, 0.0, 2.25]);
            // The `PAR1` magic is enough, whatever the name.
            let renamed = parquet.with_extension("bin");
            std::fs::copy(&parquet, &renamed).unwrap();
            let (train, _) = load(&renamed, &schema).unwrap();
            assert_same(&train, &csv_train);
        }

        const PLAIN: &str = "message m {
            OPTIONAL DOUBLE age;
            REQUIRED BYTE_ARRAY town (UTF8);
            REQUIRED BYTE_ARRAY clicked (UTF8);
            REQUIRED DOUBLE rev;
        }";

        #[test]
        fn null_dense_value_names_the_row_and_column() {
            let schema = Schema::from_file(&scratch("pq2.toml", SCHEMA)).unwrap();
            let parquet = write_parquet(
                "nulls.parquet",
                &PLAIN.replace("town", "city"),
                &[
                    Column::Double(&[20.0, 30.0], Some(&[1, 0, 1])),
                    Column::Text(&["a", "b", "c"], None),
                    Column::Text(&["yes", "no", "no"], None),
                    Column::Double(&[1.0, 2.0, 3.0], None),
                ],
            );
            let err = load(&parquet, &schema).unwrap_err().to_string();
            assert!(
                err.contains(
                    "nulls.parquet, row 2, column `age`: value \"\", expected a finite number"
                ),
                "{err}"
            );
        }

        #[test]
        fn missing_column_empty_file_and_not_parquet_each_have_their_error() {
            let schema = Schema::from_file(&scratch("pq3.toml", SCHEMA)).unwrap();
            let parquet = write_parquet(
                "nocol.parquet",
                PLAIN,
                &[
                    Column::Double(&[1.0, 2.0], Some(&[1, 1])),
                    Column::Text(&["a", "b"], None),
                    Column::Text(&["yes", "no"], None),
                    Column::Double(&[1.0, 2.0], None),
                ],
            );
            let err = load(&parquet, &schema).unwrap_err().to_string();
            assert!(
                err.contains(
                    "nocol.parquet: column `city` named in the schema is not in the Parquet \
                     file (columns: age, town, clicked, rev)"
                ),
                "{err}"
            );
            let empty = write_parquet("empty.parquet", &PLAIN.replace("town", "city"), &[]);
            let err = load(&empty, &schema).unwrap_err().to_string();
            assert!(err.contains("empty.parquet: 0 data row(s)"), "{err}");
            let fake = scratch(
                "fake.parquet",
                "age,city,clicked,rev\n1,a,yes,1\n2,b,no,2\n",
            );
            let err = load(&fake, &schema).unwrap_err().to_string();
            assert!(
                err.contains("fake.parquet: not a Parquet file (it does not start with the `PAR1`"),
                "{err}"
            );
        }

        #[test]
        fn a_list_outside_a_sequence_feature_is_an_error() {
            let schema = Schema::from_file(&scratch("pq4.toml", SCHEMA)).unwrap();
            let parquet = write_parquet(
                "listcity.parquet",
                "message m {
                    REQUIRED DOUBLE age;
                    REQUIRED GROUP city (LIST) {
                        REPEATED GROUP list { REQUIRED INT64 element; }
                    }
                    REQUIRED BYTE_ARRAY clicked (UTF8);
                    REQUIRED DOUBLE rev;
                }",
                &[
                    Column::Double(&[1.0, 2.0], None),
                    Column::Long(&[4, 5, 6], Some(&[1, 1, 1]), Some(&[0, 1, 0])),
                    Column::Text(&["yes", "no"], None),
                    Column::Double(&[1.0, 2.0], None),
                ],
            );
            let err = load(&parquet, &schema).unwrap_err().to_string();
            assert!(
                err.contains("listcity.parquet, row 1, column `city`: value \"[4, 5]\", expected a single value"),
                "{err}"
            );
        }
    }
}
