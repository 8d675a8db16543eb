//! Plain aligned tables for human output (no borders, no colours).

use comfy_table::{CellAlignment, ColumnConstraint, Table, presets};
use serde_json::Value;

/// `rows` under `header`, every line indented by `indent`; the columns in
/// `right` are right-aligned (numbers), the others left-aligned.
pub fn render(indent: &str, header: &[&str], rows: Vec<Vec<String>>, right: &[usize]) -> String {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.set_header(header.iter().copied());
    for row in rows {
        t.add_row(row);
    }
    for (i, col) in t.column_iter_mut().enumerate() {
        if right.contains(&i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
        col.set_constraint(ColumnConstraint::ContentWidth);
    }
    // The preset pads every cell by one space each side: drop the first
    // column's left pad and each line's trailing blanks.
    t.lines()
        .map(|l| format!("{indent}{}", l.strip_prefix(' ').unwrap_or(&l).trim_end()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A JSON value as a table cell: strings bare, null as `-`.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
