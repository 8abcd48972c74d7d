/** An entry of a Hugging Face tokenizer.json's added_tokens: a special token matched whole in text. */
export const addedToken = (id: number, content: string) => ({
  id,
  content,
  single_word: false,
  lstrip: false,
  rstrip: false,
  normalized: false,
  special: true,
});
