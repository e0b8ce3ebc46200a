//! Physical access: visit tickets, reader events, escort reconciliation, occupancy, audit chain.
