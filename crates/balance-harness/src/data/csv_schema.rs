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
use crate::input::InputConfig;

/// How a column becomes a feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// A number, standardised.
    Dense,
    /// A category, embedded.
    Sparse,
}

/// One feature column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureColumn {
    /// The column's header name.
    pub column: String,
    /// Its kind.
    pub kind: FeatureKind,
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
    let task_cols: Vec<usize> = schema
        .tasks
        .iter()
        .map(|t| index(&t.column))
        .collect::<Result<_>>()?;

    let mut dense: Vec<f64> = Vec::new();
    let mut raw_sparse: Vec<String> = Vec::new();
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
    // Vocabularies from the training rows: ids 1.. in order of appearance, 0 for unseen.
    let s = sparse_cols.len();
    let mut vocab_sizes = Vec::with_capacity(s);
    let mut ids = vec![0i64; rows * s];
    for j in 0..s {
        let mut vocab: HashMap<&str, i64> = HashMap::new();
        for r in 0..train_rows {
            let next = vocab.len() as i64 + 1;
            ids[r * s + j] = *vocab.entry(raw_sparse[r * s + j].as_str()).or_insert(next);
        }
        for r in train_rows..rows {
            ids[r * s + j] = vocab
                .get(raw_sparse[r * s + j].as_str())
                .copied()
                .unwrap_or(0);
        }
        vocab_sizes.push(vocab.len() as i64 + 1);
    }
    let dense32: Vec<f32> = dense.iter().map(|&x| x as f32).collect();
    let t = schema.tasks.len();
    let all = Dataset {
        examples: Batch {
            dense: Tensor::from_slice(&dense32).reshape([rows as i64, d as i64]),
            sparse: Tensor::from_slice(&ids).reshape([rows as i64, s as i64]),
            labels: Tensor::from_slice(&labels).reshape([rows as i64, t as i64]),
        },
        input: InputConfig {
            dense: d as i64,
            vocab_sizes,
            embedding_dim: schema.embedding_dim,
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
            err.contains("unknown variant `image`, expected `dense` or `sparse`"),
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
}
