"""MQTT publishing and subscribing."""
