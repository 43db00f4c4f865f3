// Intentionally empty: FuzzEntry only defines entry points (see FuzzEntry.c).
