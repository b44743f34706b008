//! The JSON Schemas of docs/schemas, used to check the messages the tests see, so the
//! published contract can't drift from the code.

use std::sync::OnceLock;

use jsonschema::{Registry, Validator};
use serde_json::Value;

#[derive(Debug, Clone, Copy)]
pub enum Schema {
    Command,
    Result,
    Event,
    PingppEvent,
}

const FILES: [&str; 4] = [
    "command.schema.json",
    "result.schema.json",
    "event.schema.json",
    "pingpp-event.schema.json",
];

fn load(file: &str) -> Value {
    let path = format!("{}/docs/schemas/{file}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("read a schema"))
        .unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

fn validators() -> &'static [Validator; 4] {
    static VALIDATORS: OnceLock<[Validator; 4]> = OnceLock::new();
    VALIDATORS.get_or_init(|| {
        let schemas = FILES.map(load);
        let mut registry = Registry::new();
        for schema in &schemas {
            let id = schema["$id"].as_str().expect("every schema has an $id");
            registry = registry.add(id, schema.clone()).expect("register a schema");
        }
        let registry: &'static _ = Box::leak(Box::new(registry.prepare().expect("the registry")));
        schemas.map(|schema| {
            jsonschema::options()
                .with_registry(registry)
                .build(&schema)
                .expect("a valid schema")
        })
    })
}

/// Panics, listing every violation, unless `value` matches `schema`.
pub fn check(schema: Schema, value: &Value) {
    let validator = &validators()[schema as usize];
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{value} does not match {}: {errors:#?}",
        FILES[schema as usize]
    );
}
