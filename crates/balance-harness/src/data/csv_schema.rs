//! Bring your own data: a CSV file plus a schema (TOML or JSON) that maps columns to features and label
//! columns to tasks, no code.
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

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::batch::Batch;
use crate::data::{Dataset, Task, TaskKind};
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

fn data_error(path: &Path, line: usize, column: &str, value: &str, expected: &str) -> HarnessError {
    HarnessError::BadData(format!(
        "{}, line {line}, column `{column}`: value {value:?}, expected {expected}",
        path.display()
    ))
}

/// Reads `csv` as `schema` says and splits it into a training set and the held-out tail.
pub fn load(csv_path: &Path, schema: &Schema) -> Result<(Dataset, Dataset)> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(u8::try_from(schema.delimiter).map_err(|_| {
            HarnessError::invalid(
                "schema",
                "delimiter",
                schema.delimiter,
                "an ASCII character",
            )
        })?)
        .from_path(csv_path)
        .map_err(|e| HarnessError::BadData(format!("cannot read {}: {e}", csv_path.display())))?;
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| HarnessError::BadData(format!("{}: no header row: {e}", csv_path.display())))?
        .iter()
        .map(str::to_string)
        .collect();
    let index = |name: &str| -> Result<usize> {
        header.iter().position(|h| h == name).ok_or_else(|| {
            HarnessError::BadData(format!(
                "{}: column `{name}` named in the schema is not in the header (columns: {})",
                csv_path.display(),
                header.join(", ")
            ))
        })
    };
    let dense_cols: Vec<(usize, &str)> = schema
        .features
        .iter()
        .filter(|f| f.kind == FeatureKind::Dense)
        .map(|f| Ok((index(&f.column)?, f.column.as_str())))
        .collect::<Result<_>>()?;
    let sparse_cols: Vec<(usize, &str)> = schema
        .features
        .iter()
        .filter(|f| f.kind == FeatureKind::Sparse)
        .map(|f| Ok((index(&f.column)?, f.column.as_str())))
        .collect::<Result<_>>()?;
    let sequence_cols: Vec<(usize, &FeatureColumn)> = schema
        .features
        .iter()
        .filter(|f| f.kind == FeatureKind::Sequence)
        .map(|f| Ok((index(&f.column)?, f)))
        .collect::<Result<_>>()?;
    let task_cols: Vec<usize> = schema
        .tasks
        .iter()
        .map(|t| index(&t.column))
        .collect::<Result<_>>()?;

    let mut dense: Vec<f64> = Vec::new();
    let mut raw_sparse: Vec<String> = Vec::new();
    let mut raw_sequences: Vec<Vec<String>> = Vec::new();
    let mut labels: Vec<f32> = Vec::new();
    let mut rows = 0usize;
    for (i, record) in reader.records().enumerate() {
        let line = i + 2; // 1-based, after the header
        let record = record.map_err(|e| {
            HarnessError::BadData(format!("{}, line {line}: {e}", csv_path.display()))
        })?;
        let field = |c: usize| record.get(c).unwrap_or("");
        for &(c, name) in &dense_cols {
            let v = field(c);
            let x: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|x: &f64| x.is_finite())
                .ok_or_else(|| data_error(csv_path, line, name, v, "a finite number"))?;
            dense.push(x);
        }
        for &(c, _) in &sparse_cols {
            raw_sparse.push(field(c).to_string());
        }
        for &(c, f) in &sequence_cols {
            let separator = f.separator.as_deref().unwrap_or("|");
            let max_len = f.max_len.unwrap_or(50);
            raw_sequences.push(
                field(c)
                    .split(separator)
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .take(max_len)
                    .map(str::to_string)
                    .collect(),
            );
        }
        for (task, &c) in schema.tasks.iter().zip(&task_cols) {
            let v = field(c);
            labels.push(match task.kind {
                TaskKind::Binary => {
                    let positive = task.positive.as_deref().unwrap_or(&[]);
                    let is_positive = if positive.is_empty() {
                        v.trim() == "1"
                    } else {
                        positive.iter().any(|p| p == v.trim())
                    };
                    f32::from(u8::from(is_positive))
                }
                TaskKind::Regression => v
                    .trim()
                    .parse::<f32>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| {
                        data_error(csv_path, line, &task.column, v, "a finite number")
                    })?,
            });
        }
        rows += 1;
    }
    if rows < 2 {
        return Err(HarnessError::BadData(format!(
            "{}: {rows} data row(s); at least 2 are needed (training and held out)",
            csv_path.display()
        )));
    }
    let holdout = ((rows as f64 * schema.holdout).round() as usize).clamp(1, rows - 1);
    let train_rows = rows - holdout;

    // Standardise dense columns with the training rows' statistics.
    let d = dense_cols.len();
    for j in 0..d {
        let column: Vec<f64> = (0..train_rows).map(|r| dense[r * d + j]).collect();
        let mean = column.iter().sum::<f64>() / train_rows as f64;
        let std =
            (column.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / train_rows as f64).sqrt();
        for r in 0..rows {
            let x = &mut dense[r * d + j];
            *x = if std > 0.0 {
                (*x - mean) / std
            } else {
                *x - mean
            };
        }
    }
    // Vocabularies from the training rows: ids 1.. in order of appearance, 0 for unseen. A feature that
    // shares a table shares its owner's vocabulary.
    let s = sparse_cols.len();
    let q = sequence_cols.len();
    let owner_of = |column: &str| -> Option<usize> {
        sparse_cols.iter().position(|(_, name)| *name == column)
    };
    let sparse_table: Vec<usize> = sparse_cols
        .iter()
        .enumerate()
        .map(|(j, (_, name))| {
            let f = schema.features.iter().find(|f| f.column == *name);
            f.and_then(|f| f.shares_table_with.as_deref())
                .and_then(owner_of)
                .unwrap_or(j)
        })
        .collect();
    let sequence_table: Vec<Option<usize>> = sequence_cols
        .iter()
        .map(|(_, f)| f.shares_table_with.as_deref().and_then(owner_of))
        .collect();
    // Vocabulary k < s: the table of sparse column k; s + i: sequence i's own.
    let mut vocabs: Vec<HashMap<String, i64>> = vec![HashMap::new(); s + q];
    let seq_vocab = |i: usize| sequence_table[i].unwrap_or(s + i);
    for r in 0..train_rows {
        for j in 0..s {
            let v = &mut vocabs[sparse_table[j]];
            let next = v.len() as i64 + 1;
            v.entry(raw_sparse[r * s + j].clone()).or_insert(next);
        }
        for i in 0..q {
            let v = &mut vocabs[seq_vocab(i)];
            for token in &raw_sequences[r * q + i] {
                let next = v.len() as i64 + 1;
                v.entry(token.clone()).or_insert(next);
            }
        }
    }
    let ids: Vec<i64> = (0..rows * s)
        .map(|k| {
            vocabs[sparse_table[k % s]]
                .get(&raw_sparse[k])
                .copied()
                .unwrap_or(0)
        })
        .collect();
    let vocab_sizes: Vec<i64> = (0..s)
        .map(|j| vocabs[sparse_table[j]].len() as i64 + 1)
        .collect();
    let mut sequences = Vec::with_capacity(q);
    let mut sequence_features = Vec::with_capacity(q);
    for i in 0..q {
        let longest = (0..rows)
            .map(|r| raw_sequences[r * q + i].len())
            .max()
            .unwrap_or(0)
            .max(1);
        let mut padded = vec![-1i64; rows * longest];
        for r in 0..rows {
            for (k, token) in raw_sequences[r * q + i].iter().enumerate() {
                padded[r * longest + k] = vocabs[seq_vocab(i)].get(token).copied().unwrap_or(0);
            }
        }
        sequences.push(Tensor::from_slice(&padded).reshape([rows as i64, longest as i64]));
        let (_, f) = sequence_cols[i];
        sequence_features.push(SequenceFeature {
            vocab_size: vocabs[seq_vocab(i)].len() as i64 + 1,
            pooling: f.pooling.unwrap_or_default(),
            shares_table_of: sequence_table[i],
        });
    }
    let shared = sparse_table.iter().enumerate().any(|(j, &t)| t != j);
    let dense32: Vec<f32> = dense.iter().map(|&x| x as f32).collect();
    let t = schema.tasks.len();
    let all = Dataset {
        examples: Batch {
            dense: Tensor::from_slice(&dense32).reshape([rows as i64, d as i64]),
            sparse: Tensor::from_slice(&ids).reshape([rows as i64, s as i64]),
            sequences,
            labels: Tensor::from_slice(&labels).reshape([rows as i64, t as i64]),
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
    Ok(all.split_at(train_rows as i64))
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
}
