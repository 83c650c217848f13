//! Issue 17's small-message comparison (the scenarios, the floors and how they are measured are
//! in `small_messages_table.rs`, which `comparison.rs` runs too).
//!
//! `cargo bench --bench small_messages` prints a Markdown table and writes it to
//! `docs/benchmarks/small-messages.md`; `cargo bench --bench small_messages -- fresh` prints only
//! the rows of streams on fresh channels (and writes nothing).

#[path = "small_messages_table.rs"]
mod small;

fn main() {
    if small::run_child() {
        return;
    }
    if std::env::args().any(|arg| arg == "--list") {
        return; // `cargo bench` asks benches to list themselves; there is nothing to list
    }
    if std::env::args().any(|arg| arg == "fresh") {
        let mut table = String::from(small::HEADER);
        small::fresh_streams(&mut table);
        return print!("{table}");
    }
    if std::env::args().any(|arg| arg == "requests") {
        let mut table = String::from(small::HEADER);
        small::request_rows(&mut table);
        return print!("{table}");
    }
    let table = small::table();
    print!("{table}");
    small::write_report(&table, "cargo bench --bench small_messages");
}
