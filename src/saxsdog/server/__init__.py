"""The saxsdog server: one transport-independent command handler, served over ZeroMQ
(and HTTP/WebSocket for the web leash), feeding an image queue with a persistent ledger."""
