//! Unit tests of the event model: each kind's attributes, severity, body and wire form.
