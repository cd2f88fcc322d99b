import { Tokenizer } from "@huggingface/tokenizers";
import fs from "fs";
const dir = process.argv[2];
const tok = new Tokenizer(JSON.parse(fs.readFileSync(dir + "/tokenizer.json", "utf8")),
                          JSON.parse(fs.readFileSync(dir + "/tokenizer_config.json", "utf8")));
const prompts = JSON.parse(fs.readFileSync(process.argv[3], "utf8"));
for (const p of prompts) {
  const enc = tok.encode(p, { add_special_tokens: false });
  console.log(JSON.stringify({ text: p, ids: enc.ids, decoded: enc.ids.length ? tok.decode(enc.ids) : "" }));
}
