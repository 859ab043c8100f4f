"""The demo of ``statement-router up --demo``: its seed data (``seed``), the bank files it feeds
(``feed``) and the partner that receives deliveries (``partner``)."""
