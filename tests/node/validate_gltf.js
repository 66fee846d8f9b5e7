// Usage: node validate_gltf.js FILE.glb -> prints the Khronos validator report as JSON.
const fs = require('fs');
const validator = require('gltf-validator');
const path = process.argv[2];
const data = new Uint8Array(fs.readFileSync(path));
validator.validateBytes(data, { maxIssues: 100 })
  .then((report) => { console.log(JSON.stringify(report)); })
  .catch((err) => { console.error(String(err)); process.exit(2); });
