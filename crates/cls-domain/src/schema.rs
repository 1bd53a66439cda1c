//! OpenAPI schemas the derives cannot express: the label maps' key and value rules
//! ([`crate::validate`] checks the same ones).

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::schema::{AdditionalProperties, Object, ObjectBuilder, OneOfBuilder, Type};

/// A label key: 1–63 of letters, digits, `-`, `_`, `.`, `/`.
pub const LABEL_KEY_PATTERN: &str = r"^[A-Za-z0-9._/-]{1,63}$";
/// A label value: up to 63 of the same characters.
pub const LABEL_VALUE_PATTERN: &str = r"^[A-Za-z0-9._/-]{0,63}$";

/// `labels` (at most 64 entries).
pub fn labels() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .max_properties(Some(crate::validate::MAX_LABELS))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(LABEL_KEY_PATTERN)),
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(LABEL_VALUE_PATTERN))
                .build(),
        )))))
        .build()
}

/// `labels` where `null` (or leaving it out) means none, or keep the stored ones.
pub fn optional_labels() -> Schema {
    Schema::OneOf(
        OneOfBuilder::new()
            .item(labels())
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .build(),
    )
}

/// `last_error.retryAfter`: a duration string or a non-negative number of seconds.
pub fn retry_after() -> Schema {
    Schema::OneOf(
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .minimum(Some(0.0)),
            )
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .build(),
    )
}
