"""The local stack: embedded services, the local broker and every function on one machine."""
