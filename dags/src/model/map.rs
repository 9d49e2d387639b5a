//! A mapped task's declaration (`map:`) and its instances' ids: what the model holds. Reading
//! the values at run time is `crate::mapping`'s.

use super::Located;

/// Instances a mapped task may have when its file says nothing.
pub const DEFAULT_MAX: usize = 1_024;
/// The most `max_map` may allow.
pub const MAX_MAX: usize = 100_000;

/// `map:` on a task.
#[derive(Clone, Debug)]
pub struct Map {
    pub over: Over,
    /// The name each instance's templates see its value under (`as:`).
    pub name: String,
    /// Most instances (`max_map`, 1,024 by default).
    pub max: usize,
}

/// Where a mapped task's values come from.
#[derive(Clone, Debug)]
pub enum Over {
    /// A query over the task's inputs (its `needs` and the datasets) with one column: a value
    /// per row, in the query's order.
    Sql(Located),
    /// One template expression giving a list (`{{ params.regions }}`).
    List(Located),
}

impl Over {
    /// Reads `over` as its file wrote it: one `{{ … }}` expression is a list; anything else a
    /// query.
    pub fn parse(located: Located) -> Over {
        match expression(&located.text) {
            Some(_) => Over::List(located),
            None => Over::Sql(located),
        }
    }

    pub fn text(&self) -> &Located {
        match self {
            Over::Sql(l) | Over::List(l) => l,
        }
    }
}

/// The expression inside `{{ … }}` when that is all the text holds.
pub(crate) fn expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}") && !inner.trim().is_empty()).then_some(inner)
}

/// The id of instance `index` of mapped task `task`: `task[index]`.
pub fn instance_id(task: &str, index: usize) -> String {
    format!("{task}[{index}]")
}

/// A task instance's id split into its task and, for a mapped instance, its index:
/// `load[3]` → (`load`, Some(3)); `load` → (`load`, None). Task ids hold no `[`, so an id
/// with one that does not end in `[digits]` is returned whole.
pub fn split_instance(id: &str) -> (&str, Option<usize>) {
    if let Some(open) = id.find('[')
        && let Some(digits) = id[open + 1..].strip_suffix(']')
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(index) = digits.parse()
    {
        return (&id[..open], Some(index));
    }
    (id, None)
}
