"""The CAG layer: knowledge pack, answer cache, retrieval warm-up; Redis or in-process."""
