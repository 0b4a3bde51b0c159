"""Patient upload links: the patient's pages at /upload/, the link's delivery and filing."""
